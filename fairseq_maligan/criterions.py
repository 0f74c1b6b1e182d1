"""Adversarial criteria for stock fairseq generators.

The criterion owns the discriminator, so fairseq's trainer optimises, all-reduces,
checkpoints and resumes it with the generator while the saved ``model`` stays a stock
fairseq model. Each update is one joint step in three stages that pass one
:class:`SampleBundle`:

1. ``generate``: clamp the first N target tokens of every row, sample m continuations
   (``sampling.sample_continuations``) up to the length cap that real rows have;
2. ``score``: the discriminator loss on real versus sampled rows (train mode, with
   gradient) and D's logits in eval mode (no dropout noise), from which the importance
   weights and every diagnostic are taken;
3. ``generator_loss``: MLE on the clamped prefixes plus the criterion's own
   ``adversarial_loss`` on the sampled suffixes, from one teacher-forced forward.

The discriminator and generator losses are summed into one backward; each touches only its
own parameters (the weights are detached and samples are discrete). The task steps
only the parameter groups that the update's loss reached (``groups_for_update``), and
``maligan_adam`` gives the discriminator its own learning rate and clipping.

Losses are per target token, like fairseq's cross-entropy: the MLE term sums the NLL of the
clamped prefix tokens and the adversarial term sums, for each row, the weighted
log-probabilities of its sampled suffixes; both are divided by the batch's number of
target tokens (``sample_size``). Every statistic is a sum that :func:`reduce_metrics`
turns into the metrics that fairseq logs (``adv/``, ``disc/``, ``sample/`` groups).
"""


import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from fairseq import metrics, utils
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum
from fairseq.distributed import utils as distributed_utils
from fairseq.optim import FairseqOptimizer
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq.tasks.translation import TranslationTask
from torch import Tensor, nn

from .discriminators import (
    DiscriminatorConfig,
    build_discriminator,
    discriminator_bce,
    format_rows,
    validate_discriminator,
)
from .errors import ConfigError, TrainingError
from .optim import GENERATOR_GROUP, MaliganAdam
from .sampling import (
    adaptive_softmax,
    adaptive_token_log_probs,
    rollout_scores,
    sample_continuations,
    token_log_probs,
    training_mode,
)
from .tasks import adopt_adversarial_steps

logger = logging.getLogger(__name__)

DISCRIMINATOR_GROUP = "discriminator"


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class AdversarialConfig(DiscriminatorConfig):
    """Options shared by every adversarial criterion: samples, schedule, discriminator."""

    num_samples: int = field(
        default=4, metadata={"help": "m: continuations sampled per prefix"}
    )
    prefix_init: Optional[int] = field(
        default=None,
        metadata={
            "help": "initial prefix length N clamped from the data (default: the whole "
            "target, i.e. pure MLE at the start); 0 with --prefix-decay 0 is MaliGAN-basic"
        },
    )
    prefix_decay: int = field(
        default=1, metadata={"help": "K: tokens removed from N at each schedule step"}
    )
    prefix_decay_updates: int = field(
        default=100, metadata={"help": "updates per schedule step"}
    )
    prefix_min: int = field(default=0, metadata={"help": "floor of N"})
    sample_max_len: Optional[int] = field(
        default=None,
        metadata={"help": "length limit of sampled rows and rollout completions (default: "
                  "the task's maximum target length, the limit real rows have)"},
    )
    mle_weight: float = field(
        default=1.0, metadata={"help": "weight of the MLE term on the clamped prefix"}
    )
    rescore_dropout: bool = field(
        default=False,
        metadata={"help": "rescore the samples with the generator's dropout on (default: "
                  "off, the estimator the paper analyses; samples are drawn without it)"},
    )
    no_kl_reference: bool = field(
        default=False,
        metadata={"help": "do not keep a frozen copy of the starting generator (saves its "
                  "memory; adv/kl, the drift from it, is then not logged)"},
    )
    disc_lr: float = field(
        default=1e-4,
        metadata={"help": "discriminator learning rate (constant; needs --optimizer maligan_adam)"},
    )
    disc_clip_norm: float = field(
        default=0.0,
        metadata={"help": "clip the discriminator's gradient norm to this (0: no clipping); "
                  "--clip-norm clips the generator's alone"},
    )
    disc_steps: int = field(
        default=1, metadata={"help": "k: discriminator updates per generator update"}
    )
    disc_warmup_updates: int = field(
        default=0,
        metadata={"help": "discriminator-only updates before the generator moves"},
    )
    disc_path: Optional[str] = field(
        default=None,
        metadata={"help": "pretrained discriminator (scripts/pretrain_discriminator.py)"},
    )
    max_skipped_updates: int = field(
        default=20,
        metadata={"help": "stop the run after this many consecutive steps whose loss was "
                  "not finite (each is skipped, nothing moves)"},
    )


def validate_adversarial(cfg: AdversarialConfig, limit: Optional[int] = None) -> None:
    """One-line errors for values no run can use; ``limit``: the task's target length."""
    validate_discriminator(cfg)
    at_least = {"num_samples": 1, "prefix_decay_updates": 1, "disc_steps": 1,
                "prefix_decay": 0, "prefix_min": 0, "disc_warmup_updates": 0,
                "prefix_init": 0, "sample_max_len": 1, "max_skipped_updates": 1}
    for name, low in at_least.items():
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise ConfigError(f"{_option(name)} must be at least {low}, got {value}")
    for name in ("mle_weight", "disc_lr", "disc_clip_norm"):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0 or (name == "disc_lr" and value == 0):
            bound = "positive" if name == "disc_lr" else "finite and not negative"
            raise ConfigError(f"{_option(name)} must be {bound}, got {value}")
    if cfg.prefix_init is not None and limit is not None and cfg.prefix_init > limit:
        raise ConfigError(
            f"--prefix-init {cfg.prefix_init} is longer than the model's maximum "
            f"target positions ({limit})"
        )
    if cfg.prefix_init is not None and cfg.prefix_min > cfg.prefix_init:
        raise ConfigError(
            f"--prefix-min {cfg.prefix_min} is larger than --prefix-init {cfg.prefix_init}"
        )
    if cfg.sample_max_len is not None and cfg.sample_max_len < (cfg.prefix_init or 0):
        raise ConfigError(
            f"--sample-max-len {cfg.sample_max_len} is shorter than --prefix-init "
            f"{cfg.prefix_init}"
        )


def prefix_length(
    update_num: int,
    longest: int,
    init: Optional[int],
    decay: int,
    decay_updates: int,
    minimum: int,
) -> int:
    """The schedule's N at ``update_num``: ``max(minimum, N0 - K * (update_num // U))``.

    ``N0`` is ``init``, or ``longest`` (the batch's longest target: pure MLE) when unset.
    """
    start = longest if init is None else init
    return max(minimum, start - decay * (update_num // max(decay_updates, 1)))


def importance_weights(disc_logits: Tensor, num_samples: int) -> Tensor:
    """w_ij = r_D(x_ij) / sum_j' r_D(x_ij'), a softmax of the logits within each group.

    ``r_D = D / (1 - D) = exp(logit)``; the softmax never forms ``r_D`` itself, which
    overflows as D -> 1 and vanishes as D -> 0. Detached: no gradient reaches D.
    """
    return torch.softmax(disc_logits.detach().float().view(-1, num_samples), dim=1)


def effective_sample_size(weights: Tensor) -> Tensor:
    """1 / sum_j w_j^2 for each group (between 1 and m)."""
    return 1.0 / weights.pow(2).sum(dim=1)


def max_target_positions(task) -> Optional[int]:
    """The task's target length limit (``--tokens-per-sample``, ``--max-target-positions``)."""
    limit = task.max_positions()
    if limit is None:
        config = getattr(task, "args", None) or getattr(task, "cfg", None)
        limit = getattr(config, "tokens_per_sample", None)
    if isinstance(limit, (tuple, list)):
        limit = limit[-1]
    return limit if isinstance(limit, int) else None


def unwrap(model: nn.Module) -> nn.Module:
    """The generator inside fairseq's distributed wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def require_maligan_adam(optimizer, criterion: str) -> None:
    """The discriminator's own learning rate and clipping need ``maligan_adam``."""
    inner = optimizer
    for attr in ("fp32_optimizer", "wrapped_optimizer"):
        inner = getattr(inner, attr, inner)
    if isinstance(inner, FairseqOptimizer) and not isinstance(inner, MaliganAdam):
        raise ConfigError(
            f"--criterion {criterion} trains a discriminator at --disc-lr with its own "
            f"--disc-clip-norm, which needs --optimizer maligan_adam (got "
            f"{type(inner).__name__})"
        )


def check_ranks_agree(cfg: AdversarialConfig, criterion: str) -> None:
    """Every rank must train the same objective: criterion options that differ between
    ranks (separate command lines, one per machine) stop every rank with one line."""
    if not torch.distributed.is_initialized():
        return
    if distributed_utils.get_data_parallel_world_size() < 2:
        return
    items = cfg.items() if hasattr(cfg, "items") else vars(cfg).items()
    options = {str(key): str(value) for key, value in items}
    gathered: list = [None] * distributed_utils.get_data_parallel_world_size()
    torch.distributed.all_gather_object(
        gathered, options, group=distributed_utils.get_data_parallel_group()
    )
    rank = distributed_utils.get_data_parallel_rank()
    for other, theirs in enumerate(gathered):
        for key in sorted(set(options) | set(theirs)):
            if options.get(key) != theirs.get(key):
                raise ConfigError(
                    f"--criterion {criterion}: ranks disagree on {_option(key)}: rank {rank} "
                    f"has {options.get(key)}, rank {other} has {theirs.get(key)}; every rank "
                    "needs the same options"
                )


def row_statistics(logits: Tensor, rows: Tensor, kind: str, pad: int, eos: int,
                   max_len: int) -> dict:
    """Summed diagnostics of real or fake rows: D's accuracy and probability, length, EOS,
    and how many were cut at the length cap (no EOS)."""
    prob = torch.sigmoid(logits.float())
    correct = logits.gt(0) if kind == "real" else logits.le(0)
    lengths = rows.ne(pad).sum(dim=1)
    ended = rows.eq(eos).any(dim=1)
    return {
        f"disc_correct_{kind}": correct.sum(),
        f"disc_{kind}_rows": logits.numel(),
        f"disc_p_{kind}": prob.sum(),
        f"disc_p_{kind}_sq": prob.pow(2).sum(),
        f"{kind}_len": lengths.sum(),
        f"{kind}_eos": ended.sum(),
        f"{kind}_clipped": (lengths.ge(max_len) & ~ended).sum(),
    }


def log_metrics(logging_outputs: list[dict]) -> None:
    """Sums to metrics: ``loss``/``nll_loss``/``ppl`` as fairseq's, then TRL-style groups."""

    def total(key: str) -> float:
        return float(sum(float(log.get(key, 0)) for log in logging_outputs))

    ln2 = math.log(2)
    sample_size = total("sample_size")
    metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / ln2, sample_size, round=3)
    if any("nll_loss" in log for log in logging_outputs):
        metrics.log_scalar(
            "nll_loss", total("nll_loss") / max(sample_size, 1) / ln2, sample_size, round=3
        )
        metrics.log_derived("ppl", lambda meters: utils.get_perplexity(meters["nll_loss"].avg))

    def ratio(name: str, numerator: str, denominator: str, scale: float = 1.0) -> None:
        count = total(denominator)
        if count > 0:
            metrics.log_scalar(name, total(numerator) / count * scale, count, round=3)

    def spread(name: str, values: str, squares: str, count_key: str) -> None:
        count = total(count_key)
        if count > 0:
            mean = total(values) / count
            variance = max(total(squares) / count - mean * mean, 0.0)
            metrics.log_scalar(name, math.sqrt(variance), count, round=3)

    ratio("mle/loss", "mle_loss", "mle_tokens", 1 / ln2)
    if any("adv_loss" in log for log in logging_outputs):
        ratio("adv/loss", "adv_loss", "sample_size", 1 / ln2)
    ratio("adv/ess", "ess_sum", "ess_groups")
    ratio("adv/kl", "kl_sum", "kl_rows")
    ratio("adv/prefix_len", "prefix_len", "batches")
    ratio("disc/loss", "disc_loss", "disc_updates")
    for kind in ("real", "fake"):
        rows = f"disc_{kind}_rows"
        ratio(f"disc/acc_{kind}", f"disc_correct_{kind}", rows)
        ratio(f"disc/p_{kind}", f"disc_p_{kind}", rows)
        spread(f"disc/p_{kind}_std", f"disc_p_{kind}", f"disc_p_{kind}_sq", rows)
        ratio(f"sample/len_{kind}", f"{kind}_len", rows)
        ratio(f"sample/eos_{kind}", f"{kind}_eos", rows)
    ratio("sample/clipped_ratio", "fake_clipped", "disc_fake_rows")
    ratio("sample/clipped_real", "real_clipped", "disc_real_rows")
    ratio("sample/entropy", "suffix_nll", "suffix_tokens")
    ratio("sample/nll_oracle", "oracle_nll_sum", "oracle_tokens")
    ratio("sample/oracle_invalid", "oracle_invalid_rows", "oracle_rows")
    if total("skipped_updates") > 0:
        metrics.log_scalar("skipped_updates", total("skipped_updates"), weight=0, round=0)


@dataclass
class SampleBundle:
    """One step's samples, built once by ``generate`` and read by every later stage.

    Rows are group-major: continuation ``j`` of batch row ``i`` is row ``i * m + j``.
    """

    prefix_len: int
    num_samples: int
    max_len: int
    rows: Tensor
    """(B * m, L) target-side rows: the clamped prefix, the sampled suffix, padding."""
    source: Tensor
    """(B * m,) the batch row that each row continues."""
    active: Tensor
    """(B,) batch rows longer than N: only their continuations are sampled suffixes."""
    real: Tensor
    """The active batch rows' targets as D reads them (:func:`format_rows`)."""
    fake_logits: Optional[Tensor] = None
    """D's eval-mode logits of the sampled rows, set by ``score``."""

    @property
    def fake(self) -> Tensor:
        """(B * m,) rows that carry a sampled suffix."""
        return self.active[self.source]

    @property
    def first(self) -> Tensor:
        """(B * m,) the first continuation of each batch row (it carries the prefix MLE)."""
        return torch.arange(self.rows.size(0), device=self.rows.device) % self.num_samples == 0


TRAIN_LOG_KEYS = (
    "loss", "mle_loss", "mle_tokens", "adv_loss", "disc_loss", "disc_updates",
    "disc_correct_real", "disc_real_rows", "disc_correct_fake", "disc_fake_rows",
    "disc_p_real", "disc_p_real_sq", "disc_p_fake", "disc_p_fake_sq",
    "real_len", "real_eos", "real_clipped", "fake_len", "fake_eos", "fake_clipped",
    "ess_sum", "ess_groups", "suffix_nll", "suffix_tokens", "kl_sum", "kl_rows",
    "skipped_updates",
)
"""Every training step logs all of these (zeros where unused): fairseq sums the logging
outputs of all ranks in one all-reduce, which needs the same keys everywhere."""


class FrozenCopies(nn.Module):
    """Frozen copies of the generator kept in a criterion's state: made at the first step
    (the generator is not known before), saved with the criterion and restored on resume
    (held back until the copy exists)."""

    frozen_copies: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, dict[str, Tensor]] = {}

    def frozen_copy(self, name: str, model: nn.Module) -> nn.Module:
        """The frozen generator copy ``name``: the saved one, else the generator as it is now."""
        existing = self._modules.get(name)
        if existing is not None:
            return existing
        frozen = copy.deepcopy(unwrap(model)).requires_grad_(False).eval()
        if name in self._pending:
            frozen.load_state_dict(self._pending.pop(name))
        self.add_module(name, frozen)
        return frozen

    def load_state_dict(self, state_dict: Any, strict: bool = True, **kwargs: Any):
        """Accept an MLE checkpoint's empty state; keep saved copies until they are made."""
        if not state_dict:
            logger.info("no criterion state in the checkpoint: the criterion is kept as built")
            return None
        state_dict = dict(state_dict)
        for name in self.frozen_copies:
            if self._modules.get(name) is None:
                prefix = name + "."
                pending = {k[len(prefix):]: state_dict.pop(k)
                           for k in list(state_dict) if k.startswith(prefix)}
                if pending:
                    self._pending[name] = pending
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any):
        state = super().state_dict(*args, **kwargs)
        for name, pending in self._pending.items():
            for key, value in pending.items():
                state[f"{name}.{key}"] = value
        return state


class AdversarialCriterion(FrozenCopies, FairseqCriterion):
    """The joint step, the discriminator, the schedule and the metrics of every criterion."""

    frozen_copies = ("reference",)

    def __init__(self, cfg: AdversarialConfig, task) -> None:
        super().__init__(task)
        self.cfg = cfg
        self.name = name = getattr(cfg, "_name", None) or type(self).__name__
        if not isinstance(task, (LanguageModelingTask, TranslationTask)):
            raise ConfigError(
                f"--criterion {name} trains language models and translation models: use "
                "--task language_modeling, translation or their maligan_ versions, not "
                f"{type(task).__name__}"
            )
        check_sentence_rows(task, name)
        limit = max_target_positions(task)
        validate_adversarial(cfg, limit)
        self.max_len = cfg.sample_max_len or limit
        if self.max_len is None:
            raise ConfigError("the task sets no target length limit: pass --sample-max-len")
        self.padding_idx = task.target_dictionary.pad()
        self.eos_idx = task.target_dictionary.eos()
        self.num_updates = 0
        self._reached: set[str] = set()
        self._skipped_in_a_row = 0
        self.sampler_options: dict[str, Any] = {}
        self.rollout_options: dict[str, Any] = {}
        """Extra keyword arguments of ``sample_continuations`` and ``rollout_scores``
        (``banned``, ``recompute_prefix``): how ``scripts/bench.py`` runs the reference
        implementations and samples of a fixed length inside a training step."""
        self._refreshed_at = -1
        self._optimizer_checked = False
        conditional = isinstance(task, TranslationTask)
        self.discriminator = build_discriminator(
            cfg, task.target_dictionary, task.source_dictionary, conditional
        )
        for param in self.discriminator.parameters():
            param.param_group = DISCRIMINATOR_GROUP
            param.optim_overrides = {"lr": cfg.disc_lr, "clip_norm": cfg.disc_clip_norm}
        adopt_adversarial_steps(task, self)
        check_ranks_agree(cfg, name)

    # -- state ------------------------------------------------------------------------

    def begin_update(self, update_num: int, optimizer=None) -> None:
        """Called by the task before each forward of update ``update_num``."""
        if update_num != self.num_updates:
            self._reached = set()
        self.num_updates = update_num
        if optimizer is not None:
            self.check_optimizer(optimizer)

    def check_optimizer(self, optimizer) -> None:
        """At the start of a run (see ``patches``) and before the first step."""
        if not self._optimizer_checked:
            require_maligan_adam(optimizer, self.name)
            self._optimizer_checked = True

    def groups_for_update(self) -> set[str]:
        """The parameter groups that this update's loss reached on any rank (then forgets).

        Decided by the schedule and the batch in ``forward``: the generator's group when
        it moves, the discriminator's when there were sampled rows to judge, neither for
        a skipped (non-finite) step. Ranks agree by taking the union.
        """
        names = (GENERATOR_GROUP, DISCRIMINATOR_GROUP)
        reached = torch.tensor([float(name in self._reached) for name in names])
        if distributed_utils.get_data_parallel_world_size() > 1:
            device = next(self.discriminator.parameters()).device
            reached = distributed_utils.all_reduce(
                reached.to(device), group=distributed_utils.get_data_parallel_group()
            ).cpu()
        self._reached = set()
        return {name for name, flag in zip(names, reached.tolist()) if flag > 0}

    def refresh_copies(self, model: nn.Module) -> None:
        """Once per update, before anything is sampled: make the frozen copies exist."""
        if not self.cfg.no_kl_reference:
            self.frozen_copy("reference", model)

    # -- phases -----------------------------------------------------------------------

    def generator_moves(self) -> bool:
        """After the warm-up, the generator moves on every k-th update."""
        since = self.num_updates - self.cfg.disc_warmup_updates
        return since >= 0 and (since + 1) % self.cfg.disc_steps == 0

    def current_prefix_len(self, longest: int) -> int:
        cfg = self.cfg
        return prefix_length(
            self.num_updates, longest, cfg.prefix_init, cfg.prefix_decay,
            cfg.prefix_decay_updates, cfg.prefix_min,
        )

    # -- the training step --------------------------------------------------------------

    def forward(self, model, sample: dict, reduce: bool = True):
        """One joint step: D on real rows versus sampled rows, G on the same samples."""
        if not model.training:
            return self.validation_output(model, sample)
        self.refresh_copies(model)
        target = sample["target"]
        prefix_len = min(self.current_prefix_len(target.size(1)), target.size(1))
        ntokens = _ntokens(sample, self.padding_idx)
        generator_moves = self.generator_moves()
        bundle = self.generate(model, sample, prefix_len, self.cfg.num_samples)
        reached = {GENERATOR_GROUP} if generator_moves else set()
        if bundle is None:
            loss, stats = self.mle_only(model, sample, ntokens, generator_moves)
        else:
            disc_loss, stats = self.score(sample, bundle)
            loss = ntokens * disc_loss
            reached.add(DISCRIMINATOR_GROUP)
            if generator_moves:
                generator_loss, generator_stats = self.generator_loss(model, sample, bundle)
                loss = loss + generator_loss
                stats.update(generator_stats)
        if bool(torch.isfinite(loss)):
            self._skipped_in_a_row = 0
        else:
            loss, stats, reached = self.skip(model, float(loss)), {"skipped_updates": 1}, set()
        self._reached |= reached
        logging_output: dict[str, Any] = dict.fromkeys(TRAIN_LOG_KEYS, 0)
        logging_output.update(stats)
        logging_output.update(ntokens=ntokens, nsentences=target.size(0), sample_size=ntokens,
                              prefix_len=prefix_len, batches=1)
        return loss, ntokens, logging_output

    def skip(self, model, value: float) -> Tensor:
        """A loss that moves nothing, for a step whose loss is ``value`` (not finite); the
        run stops after ``--max-skipped-updates`` such steps in a row."""
        self._skipped_in_a_row += 1
        limit = self.cfg.max_skipped_updates
        if self._skipped_in_a_row >= limit:
            raise TrainingError(
                f"{limit} steps in a row had a non-finite loss (last: {value} at update "
                f"{self.num_updates}): stopping (--max-skipped-updates {limit}); the last "
                "checkpoint is from before them: lower --lr or --disc-lr and resume"
            )
        logger.warning("non-finite loss (%s) at update %d: step skipped, parameters "
                       "unchanged (%d in a row)", value, self.num_updates,
                       self._skipped_in_a_row)
        return self._zero_loss(model)

    def generate(self, model, sample: dict, prefix_len: int,
                 num_samples: int) -> Optional[SampleBundle]:
        """Stage 1: the step's samples, or None if no row is longer than N (plain MLE)."""
        target = sample["target"]
        lengths = target.ne(self.padding_idx).sum(dim=1)
        active = lengths > prefix_len
        if not bool(active.any()):
            return None
        rows = sample_continuations(model, sample, prefix_len, num_samples, self.max_len,
                                    **self.sampler_options)
        source = torch.arange(target.size(0), device=target.device)
        return SampleBundle(
            prefix_len=prefix_len, num_samples=num_samples, max_len=self.max_len, rows=rows,
            source=source.repeat_interleave(num_samples), active=active,
            real=format_rows(target[active], self.padding_idx, self.max_len),
        )

    def discriminate(self, sample: dict, rows: Tensor, source: Tensor) -> Tensor:
        """D's logits for target-side ``rows`` continuing batch rows ``source``."""
        src_tokens = None
        if self.discriminator.conditional:
            src_tokens = sample["net_input"]["src_tokens"][source]
        return self.discriminator(format_rows(rows, self.padding_idx, self.max_len), src_tokens)

    def score(self, sample: dict, bundle: SampleBundle) -> tuple[Tensor, dict]:
        """Stage 2: D's loss on real versus sampled rows, and its eval-mode logits.

        The loss is taken in D's train mode; the logits that weigh the samples (and every
        diagnostic) in eval mode, so that dropout adds no noise to the weights.
        """
        fake = bundle.fake
        real_source = bundle.active.nonzero().squeeze(1)
        fake_rows, fake_source = bundle.rows[fake], bundle.source[fake]
        loss = discriminator_bce(
            self.discriminate(sample, bundle.real, real_source),
            self.discriminate(sample, fake_rows, fake_source),
        )
        with torch.no_grad(), training_mode(self.discriminator, False):
            real_logits = self.discriminate(sample, bundle.real, real_source)
            bundle.fake_logits = self.discriminate(sample, fake_rows, fake_source)
        stats = {"disc_loss": loss.detach(), "disc_updates": 1}
        stats.update(self.row_statistics(real_logits, bundle.real, "real"))
        stats.update(self.row_statistics(bundle.fake_logits, fake_rows, "fake"))
        return loss, stats

    def row_statistics(self, logits: Tensor, rows: Tensor, kind: str) -> dict:
        return row_statistics(logits, rows, kind, self.padding_idx, self.eos_idx, self.max_len)

    def generator_loss(self, model, sample: dict, bundle: SampleBundle) -> tuple[Tensor, dict]:
        """Stage 3: MLE on the clamped prefixes plus the criterion's loss on the suffixes.

        One teacher-forced forward scores the first continuation of every row (its prefix
        carries the MLE term; for a row no longer than N it is the whole target) and every
        continuation with a sampled suffix.
        """
        fake, first = bundle.fake, bundle.first
        scored = fake | first
        with training_mode(model, self.cfg.rescore_dropout and model.training):
            lprobs = token_log_probs(model, sample, bundle.rows[scored], bundle.source[scored])
        in_prefix = torch.arange(lprobs.size(1), device=lprobs.device) < bundle.prefix_len
        mle = -(lprobs[first[scored]] * in_prefix).sum()
        mle_tokens = bundle.rows[first][:, : bundle.prefix_len].ne(self.padding_idx).sum()
        suffix_lprobs = lprobs[fake[scored]] * ~in_prefix
        adversarial, stats = self.adversarial_loss(model, sample, bundle, suffix_lprobs)
        total = self.cfg.mle_weight * mle + adversarial
        stats.update(self.drift_statistics(sample, bundle, suffix_lprobs.detach()))
        stats.update(loss=total.detach(), mle_loss=mle.detach(), mle_tokens=mle_tokens,
                     adv_loss=adversarial.detach())
        return total, stats

    def drift_statistics(self, sample: dict, bundle: SampleBundle, suffix_lprobs: Tensor) -> dict:
        """Entropy estimate of the sampled suffixes and KL(generator || starting generator).

        Both are Monte-Carlo estimates on this step's samples: the entropy per token is
        the mean of ``-log p(x_t)`` over the sampled tokens, and the KL per row the mean of
        ``sum_t log p(x_t) - log p_start(x_t)`` over the suffixes.
        """
        fake = bundle.fake
        rows, source = bundle.rows[fake], bundle.source[fake]
        positions = torch.arange(rows.size(1), device=rows.device)
        suffix = (positions >= bundle.prefix_len) & rows.ne(self.padding_idx)
        stats = {"suffix_nll": -suffix_lprobs.sum(), "suffix_tokens": suffix.sum()}
        reference = self._modules.get("reference")
        if reference is not None:
            with torch.no_grad(), training_mode(reference, False):
                start = token_log_probs(reference, sample, rows, source)
            stats["kl_sum"] = (suffix_lprobs - start * suffix).sum()
            stats["kl_rows"] = rows.size(0)
        return stats

    def adversarial_loss(self, model, sample: dict, bundle: SampleBundle,
                         suffix_lprobs: Tensor) -> tuple[Tensor, dict]:
        """The criterion's term on the sampled suffixes and its statistics.

        ``suffix_lprobs`` (rows with a sampled suffix, L) holds ``log p(x_t | x_<t)`` with
        gradient at the suffix positions and 0 elsewhere.
        """
        raise NotImplementedError

    def mle_only(self, model, sample: dict, ntokens: int,
                 generator_moves: bool) -> tuple[Tensor, dict]:
        """N covers every row: plain MLE (the discriminator has no fake rows to learn from)."""
        if not generator_moves:
            return self._zero_loss(model), {}
        loss, _ = self.mle_loss(model, sample)
        weighted = self.cfg.mle_weight * loss
        return weighted, {"loss": weighted.detach(), "mle_loss": loss.detach(),
                          "mle_tokens": ntokens}

    def _zero_loss(self, model) -> Tensor:
        """A loss whose gradient is zero for every parameter: a step that moves nothing."""
        params = [p for p in (*model.parameters(), *self.discriminator.parameters())
                  if p.requires_grad]
        return sum(p.sum() for p in params) * 0.0

    def mle_loss(self, model, sample: dict) -> tuple[Tensor, int]:
        """Summed NLL of the targets, exactly as fairseq's cross-entropy (or, for an
        adaptive softmax, its ``adaptive_loss``) computes it."""
        net_output = model(**sample["net_input"])
        target = model.get_targets(sample, net_output)
        softmax = adaptive_softmax(model)
        if softmax is not None:
            picked = adaptive_token_log_probs(softmax, net_output[0], target)
            loss = -picked.masked_fill(target.eq(self.padding_idx), 0.0).sum()
            return loss, _ntokens(sample, self.padding_idx)
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        loss = torch.nn.functional.nll_loss(
            lprobs.view(-1, lprobs.size(-1)),
            target.view(-1),
            ignore_index=self.padding_idx,
            reduction="sum",
        )
        return loss, _ntokens(sample, self.padding_idx)

    # -- validation ---------------------------------------------------------------------

    def validation_output(self, model, sample: dict) -> tuple[Tensor, int, dict]:
        """Validation reports the generator's own NLL, as MLE training would."""
        loss, ntokens = self.mle_loss(model, sample)
        return loss, ntokens, {
            "loss": loss.detach(),
            "nll_loss": loss.detach(),
            "ntokens": ntokens,
            "nsentences": sample["target"].size(0),
            "sample_size": ntokens,
        }

    @torch.no_grad()
    def sample_statistics(self, model, sample: dict) -> tuple[dict, Tensor]:
        """One free-running sample per valid row: D's view of them and of the real rows.

        Returns the summed statistics (as in training) and the sampled rows.
        """
        target = sample["target"]
        rows = sample_continuations(model, sample, 0, 1, self.max_len)
        source = torch.arange(target.size(0), device=target.device)
        with training_mode(self.discriminator, False):
            real_logits = self.discriminate(sample, target, source)
            fake_logits = self.discriminate(sample, rows, source)
        stats = self.row_statistics(real_logits, format_rows(target, self.padding_idx,
                                                             self.max_len), "real")
        stats.update(self.row_statistics(fake_logits, rows, "fake"))
        return stats, rows

    # -- metrics ------------------------------------------------------------------------

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict]) -> None:
        log_metrics(logging_outputs)


def _ntokens(sample: dict, pad: int) -> int:
    return sample["ntokens"] if "ntokens" in sample else int(sample["target"].ne(pad).sum())


def check_sentence_rows(task, criterion: str) -> None:
    """Real rows must be single sentences that end in EOS, as the samples are.

    Block-mode language-model data (``--sample-break-mode none/complete``) holds
    multi-sentence blocks and ``--add-bos-token`` starts real rows with BOS; either would
    let D tell real from generated rows by format alone.
    """
    args = getattr(task, "args", None)
    if not isinstance(task, LanguageModelingTask) or args is None:
        return
    mode = getattr(args, "sample_break_mode", "eos")
    if str(mode) != "eos":
        raise ConfigError(
            f"--criterion {criterion} needs one sentence per row, as samples stop at EOS: "
            f"use --sample-break-mode eos, not {mode} (a loading option: the binarised data "
            "and a block-mode pretrained checkpoint can stay as they are)"
        )
    if getattr(args, "add_bos_token", False):
        raise ConfigError(
            f"--criterion {criterion}: --add-bos-token starts every real row with BOS, "
            "which samples never hold; drop the option"
        )


@dataclass
class MaliganMixedConfig(AdversarialConfig):
    baseline: ChoiceEnum(["uniform", "zero"]) = field(  # type: ignore[valid-type]
        default="uniform",
        metadata={"help": "b: 'uniform' is 1/m (the weights' mean); 'zero' uses no baseline"},
    )


@register_criterion("maligan_mixed", dataclass=MaliganMixedConfig)
class MaliganMixedCriterion(AdversarialCriterion):
    """Sequential MaliGAN with mixed MLE training (Che et al. 2017, Algorithm 2).

    The first N target tokens of each row are clamped and trained by MLE; m suffixes
    are sampled after them and trained with the normalised importance weights
    ``w = softmax(D logits)`` within each group, minus the baseline ``b``. Rows no
    longer than N contribute MLE only. ``--prefix-init 0 --prefix-decay 0`` is
    MaliGAN-basic (Algorithm 1).
    """

    def __init__(self, cfg: MaliganMixedConfig, task) -> None:
        if cfg.num_samples == 1 and cfg.baseline == "uniform":
            raise ConfigError(
                "--num-samples 1 with --baseline uniform gives every sample weight 1 minus "
                "baseline 1: an adversarial gradient of zero; use --num-samples 2 or more"
            )
        super().__init__(cfg, task)

    def adversarial_loss(self, model, sample, bundle, suffix_lprobs):
        """-sum_ij (w_ij - b) log p(x_ij^{>N} | y_i^{<=N})."""
        m = bundle.num_samples
        weights = importance_weights(bundle.fake_logits, m)
        baseline = 1.0 / m if self.cfg.baseline == "uniform" else 0.0
        sequence = suffix_lprobs.sum(dim=1).view(-1, m)
        loss = -((weights.to(sequence) - baseline) * sequence).sum()
        return loss, {"ess_sum": effective_sample_size(weights).sum(),
                      "ess_groups": weights.size(0)}


@dataclass
class RolloutConfig(AdversarialConfig):
    rollouts: int = field(
        default=16, metadata={"help": "R: Monte-Carlo completions of each prefix"}
    )
    rollout_max_rows: int = field(
        default=1024,
        metadata={"help": "rollouts of consecutive steps share a decoding batch up to this "
                          "many rows (at least one step per batch); more means fewer, larger "
                          "calls and more memory for decoder caches: raise it on a GPU"},
    )


class RolloutCriterion(AdversarialCriterion):
    """Per-token values Q from R Monte-Carlo completions of every sampled prefix."""

    def __init__(self, cfg: RolloutConfig, task) -> None:
        super().__init__(cfg, task)
        for name in ("rollouts", "rollout_max_rows"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{_option(name)} must be at least 1, got {getattr(cfg, name)}")

    def rollout_policy(self, model: nn.Module) -> nn.Module:
        """The model that completes prefixes (the generator itself by default)."""
        return unwrap(model)

    def token_weights(self, values: Tensor, valid: Tensor) -> Tensor:
        """Weights (rows, L) of log p(x_t | x_<t) from rollout logits (rows, L, R)."""
        raise NotImplementedError

    def adversarial_loss(self, model, sample, bundle, suffix_lprobs):
        """-sum_{i,t} weight_it log p(x_it | x_i,<t) over the sampled tokens."""
        fake = bundle.fake
        rows, source = bundle.rows[fake], bundle.source[fake]

        def score(completions: Tensor, order: Tensor) -> Tensor:
            return self.discriminate(sample, completions, order)

        with training_mode(self.discriminator, False):
            values = rollout_scores(
                self.rollout_policy(model), sample, rows, source, bundle.prefix_len,
                self.cfg.rollouts, score, bundle.max_len, max_rows=self.cfg.rollout_max_rows,
                **self.rollout_options,
            )
        positions = torch.arange(rows.size(1), device=rows.device)
        valid = (positions >= bundle.prefix_len) & rows.ne(self.padding_idx)
        weights = self.token_weights(values, valid)
        return -(weights.to(suffix_lprobs) * suffix_lprobs).sum(), {}


@register_criterion("maligan_rollout", dataclass=RolloutConfig)
class MaliganRolloutCriterion(RolloutCriterion):
    """MaliGAN with Monte-Carlo rollouts (the paper's "MCTS" variant).

    ``Q_it`` is the mean of ``r_D`` over R completions of ``x_{i,<=t}`` by the current
    generator; the update is ``(sum_i L_i) / (m sum_{i,t} Q_it) sum_{i,t} Q_it grad log p``
    within each group of m samples, so the weights average 1/m per token. Computed in
    log space (``r_D = exp(logit)`` overflows).
    """

    def token_weights(self, values: Tensor, valid: Tensor) -> Tensor:
        m = self.cfg.num_samples
        log_q = torch.logsumexp(values, dim=2) - math.log(values.size(2))
        log_q = log_q.masked_fill(~valid, float("-inf")).view(-1, m * values.size(1))
        share = torch.softmax(log_q, dim=1).view_as(valid)
        lengths = valid.view(-1, m * values.size(1)).sum(dim=1, keepdim=True)
        return share * (lengths / m).repeat_interleave(m, dim=0)


@dataclass
class SeqGANConfig(RolloutConfig):
    prefix_init: Optional[int] = field(
        default=0,
        metadata={"help": "initial prefix length N clamped from the data (SeqGAN: 0)"},
    )
    prefix_decay: int = field(
        default=0, metadata={"help": "K: tokens removed from N at each schedule step"}
    )
    num_samples: int = field(
        default=1, metadata={"help": "m: sequences sampled per data row"}
    )
    rollout_refresh_updates: int = field(
        default=1, metadata={"help": "copy the generator into the rollout policy every U updates"}
    )
    rollout_ema: float = field(
        default=0.0,
        metadata={"help": "if > 0, the rollout policy is instead an exponential moving "
                  "average of the generator with this decay, updated every update"},
    )


@register_criterion("seqgan", dataclass=SeqGANConfig)
class SeqGANCriterion(RolloutCriterion):
    """SeqGAN (Yu et al. 2017): REINFORCE with Monte-Carlo rollout rewards.

    ``Q(Y_<t, y_t)`` is the mean of ``D`` over R completions of ``Y_<=t`` by the delayed
    rollout policy G_beta (``D(Y)`` itself at the last token); the loss is
    ``-sum_t Q_t log G(y_t | Y_<t)``. G_beta is part of the criterion's state, so a
    resumed run continues with the same policy.
    """

    frozen_copies = ("reference", "policy")

    def __init__(self, cfg: SeqGANConfig, task) -> None:
        super().__init__(cfg, task)
        if cfg.rollout_refresh_updates < 1:
            raise ConfigError(
                f"--rollout-refresh-updates must be at least 1, got {cfg.rollout_refresh_updates}"
            )
        if not 0.0 <= cfg.rollout_ema < 1.0:
            raise ConfigError(f"--rollout-ema must be in [0, 1), got {cfg.rollout_ema}")

    def refresh_copies(self, model: nn.Module) -> None:
        """Every update (whichever side moves): beta <- theta every U updates, or the EMA."""
        super().refresh_copies(model)
        policy = self.frozen_copy("policy", model)
        if self._refreshed_at == self.num_updates:
            return
        self._refreshed_at = self.num_updates
        ema = self.cfg.rollout_ema
        with torch.no_grad():
            for beta, theta in zip(policy.parameters(), unwrap(model).parameters()):
                if ema > 0:
                    beta.mul_(ema).add_(theta.detach(), alpha=1 - ema)
                elif self.num_updates % self.cfg.rollout_refresh_updates == 0:
                    beta.copy_(theta.detach())

    def rollout_policy(self, model: nn.Module) -> nn.Module:
        return self.frozen_copy("policy", model)

    def token_weights(self, values: Tensor, valid: Tensor) -> Tensor:
        return torch.sigmoid(values).mean(dim=2) * valid
