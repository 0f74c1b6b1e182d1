"""Adversarial criteria for stock fairseq generators.

The criterion owns the discriminator, so fairseq's trainer optimises, all-reduces,
checkpoints and resumes it with the generator while the saved ``model`` stays a stock
fairseq model. Each update is one joint step: the discriminator loss and the generator
loss are summed into one backward, each touching only its own parameters (the
importance weights are detached and samples are discrete). ``maligan_adam`` gives the
discriminator its own learning rate and leaves a group that a step did not use alone.

Losses are per target token, like fairseq's cross-entropy: the MLE term sums the NLL of
the clamped prefix tokens and the MaliGAN term sums, for each row, the weighted
log-probabilities of its sampled suffixes; both are divided by the batch's number of
target tokens (``sample_size``).
"""

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks.language_modeling import LanguageModelingTask
from fairseq.tasks.translation import TranslationTask
from torch import Tensor

from .discriminators import (
    DISCRIMINATOR_ARCHS,
    Discriminator,
    MaliganDiscriminatorConfig,
    build_discriminator,
)
from .errors import ConfigError
from .sampling import (
    is_encoder_decoder,
    rollout_scores,
    sample_continuations,
    token_log_probs,
)

logger = logging.getLogger(__name__)

DISCRIMINATOR_GROUP = "discriminator"


@dataclass
class AdversarialConfig(FairseqDataclass):
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
        metadata={"help": "length limit of sampled rows (default: the batch's longest target)"},
    )
    mle_weight: float = field(
        default=1.0, metadata={"help": "weight of the MLE term on the clamped prefix"}
    )
    disc_arch: ChoiceEnum(DISCRIMINATOR_ARCHS) = field(  # type: ignore[valid-type]
        default="rnn_discriminator", metadata={"help": "discriminator architecture"}
    )
    disc_embed_dim: int = field(default=64, metadata={"help": "discriminator embedding size"})
    disc_hidden_dim: int = field(
        default=64,
        metadata={"help": "discriminator RNN size per direction, or CNN filters per width"},
    )
    disc_layers: int = field(default=1, metadata={"help": "discriminator RNN layers"})
    disc_cell: ChoiceEnum(["gru", "lstm"]) = field(  # type: ignore[valid-type]
        default="gru", metadata={"help": "discriminator RNN cell"}
    )
    disc_filter_sizes: str = field(
        default="2,3,4,5", metadata={"help": "discriminator CNN filter widths"}
    )
    disc_dropout: float = field(default=0.1, metadata={"help": "discriminator dropout"})
    disc_lr: float = field(
        default=1e-4,
        metadata={"help": "discriminator learning rate (constant; needs --optimizer maligan_adam)"},
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


def discriminator_bce(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = -mean log D(y) - mean log(1 - D(x)), in logit form (never log(sigmoid))."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def effective_sample_size(weights: Tensor) -> Tensor:
    """1 / sum_j w_j^2 for each group (between 1 and m)."""
    return 1.0 / weights.pow(2).sum(dim=1)


TRAIN_LOG_KEYS = (
    "loss", "mle_loss", "mle_tokens", "maligan_loss", "disc_loss", "disc_updates",
    "disc_correct_real", "disc_real_rows", "disc_correct_fake", "disc_fake_rows",
    "ess_sum", "ess_groups", "sample_len_sum", "sample_rows", "skipped_updates",
)


def max_target_positions(task) -> Optional[int]:
    """The task's target length limit (``--tokens-per-sample``, ``--max-target-positions``)."""
    limit = task.max_positions()
    if limit is None:
        config = getattr(task, "args", None) or getattr(task, "cfg", None)
        limit = getattr(config, "tokens_per_sample", None)
    if isinstance(limit, (tuple, list)):
        limit = limit[-1]
    return limit if isinstance(limit, int) else None


def _tokens_ntokens(sample: dict, pad: int) -> int:
    return sample["ntokens"] if "ntokens" in sample else int(sample["target"].ne(pad).sum())


class AdversarialCriterion(FairseqCriterion):
    """Shared machinery: the discriminator, its update, the schedule, logging."""

    def __init__(self, cfg: AdversarialConfig, task) -> None:
        super().__init__(task)
        self.cfg = cfg
        if not isinstance(task, (LanguageModelingTask, TranslationTask)):
            raise ConfigError(
                f"--criterion {getattr(cfg, '_name', None) or type(self).__name__} trains "
                "language models and translation models: use --task language_modeling, "
                f"translation or their maligan_ versions, not {type(task).__name__}"
            )
        self._validate(cfg, max_target_positions(task))
        self.padding_idx = task.target_dictionary.pad()
        self.num_updates = 0
        self.discriminator = self._build_discriminator(cfg, task)
        for param in self.discriminator.parameters():
            param.param_group = DISCRIMINATOR_GROUP
            param.optim_overrides = {"lr": cfg.disc_lr}

    @staticmethod
    def _validate(cfg: AdversarialConfig, limit: Optional[int]) -> None:
        if cfg.num_samples < 1:
            raise ConfigError(f"--num-samples must be at least 1, got {cfg.num_samples}")
        for name in ("prefix_init", "prefix_decay", "prefix_min", "disc_warmup_updates"):
            value = getattr(cfg, name)
            if value is not None and value < 0:
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} must not be negative, got {value}")
        if cfg.prefix_decay_updates < 1:
            raise ConfigError(
                f"--prefix-decay-updates must be at least 1, got {cfg.prefix_decay_updates}"
            )
        if cfg.disc_steps < 1:
            raise ConfigError(f"--disc-steps must be at least 1, got {cfg.disc_steps}")
        if cfg.disc_lr <= 0:
            raise ConfigError(f"--disc-lr must be positive, got {cfg.disc_lr}")
        if cfg.prefix_init is not None and limit is not None and cfg.prefix_init > limit:
            raise ConfigError(
                f"--prefix-init {cfg.prefix_init} is longer than the model's maximum "
                f"target positions ({limit})"
            )
        if cfg.prefix_init is not None and cfg.prefix_min > cfg.prefix_init:
            raise ConfigError(
                f"--prefix-min {cfg.prefix_min} is larger than --prefix-init {cfg.prefix_init}"
            )

    @staticmethod
    def _build_discriminator(cfg: AdversarialConfig, task) -> Discriminator:
        conditional = task.source_dictionary is not task.target_dictionary
        if cfg.disc_path:
            return load_discriminator(cfg.disc_path, task.target_dictionary, task.source_dictionary)
        disc_cfg = MaliganDiscriminatorConfig(
            embed_dim=cfg.disc_embed_dim,
            hidden_dim=cfg.disc_hidden_dim,
            num_layers=cfg.disc_layers,
            dropout=cfg.disc_dropout,
            cell=cfg.disc_cell,
            filter_sizes=cfg.disc_filter_sizes,
            conditional=conditional,
        )
        return build_discriminator(
            cfg.disc_arch, disc_cfg, task.target_dictionary, task.source_dictionary
        )

    # -- state ------------------------------------------------------------------------

    def set_num_updates(self, num_updates: int) -> None:
        """Called before each training step (see ``fairseq_maligan.patches``)."""
        self.num_updates = num_updates

    def load_state_dict(self, state_dict: Any, strict: bool = True, **kwargs: Any):
        """Accept the empty criterion state of an MLE checkpoint: keep the fresh D."""
        if not state_dict:
            logger.info("no criterion state in the checkpoint: discriminator kept as built")
            return None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

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
        cfg = self.cfg
        target = sample["target"]
        batch, width = target.shape
        prefix_len = min(self.current_prefix_len(width), width)
        lengths = target.ne(self.padding_idx).sum(dim=1)
        active = lengths > prefix_len
        ntokens = _tokens_ntokens(sample, self.padding_idx)
        # Every rank must log the same keys: fairseq sums them in one all-reduce.
        logging_output: dict[str, Any] = dict.fromkeys(TRAIN_LOG_KEYS, 0)
        logging_output.update(
            ntokens=ntokens, nsentences=batch, sample_size=ntokens,
            prefix_len=prefix_len, batches=1,
        )
        generator_moves = self.generator_moves()

        if not bool(active.any()):
            return self._mle_only(model, sample, ntokens, generator_moves, logging_output)

        m = cfg.num_samples
        order = torch.arange(batch, device=target.device).repeat_interleave(m)
        rows = sample_continuations(model, sample, prefix_len, m, cfg.sample_max_len)
        fake = active[order]
        active_index = active.nonzero().squeeze(1)
        real_logits = self.discriminate(model, sample, target[active], active_index)
        fake_logits = self.discriminate(model, sample, rows[fake], order[fake])
        disc_loss = self.discriminator_loss(real_logits, fake_logits, logging_output)
        sample_lengths = rows[fake].ne(self.padding_idx).sum(dim=1)
        logging_output.update(sample_len_sum=sample_lengths.sum(), sample_rows=fake.sum())

        loss = ntokens * disc_loss
        if generator_moves:
            loss = loss + self._generator_loss(
                model, sample, rows, order, active, prefix_len, fake_logits, logging_output
            )
        if not bool(torch.isfinite(loss)):
            return self._skip_update(model, loss, ntokens, logging_output)
        return loss, ntokens, logging_output

    def _skip_update(self, model, loss: Tensor, ntokens: int, logging_output: dict):
        """A non-finite loss (e.g. NaN discriminator logits) becomes a zero-gradient step.

        Every gradient is zero, so ``maligan_adam`` skips both parameter groups and the
        parameters stay as they were; training goes on with the next batch.
        """
        logger.warning(
            "non-finite adversarial loss (%s) at update %d: update skipped, parameters unchanged",
            float(loss), self.num_updates,
        )
        logging_output.update(dict.fromkeys(TRAIN_LOG_KEYS, 0), skipped_updates=1)
        return self._zero_loss(model), ntokens, logging_output

    def _zero_loss(self, model) -> Tensor:
        """A loss whose gradient is zero for every parameter: a step that moves nothing."""
        params = [p for p in (*model.parameters(), *self.discriminator.parameters())
                  if p.requires_grad]
        return sum(p.sum() for p in params) * 0.0

    def _generator_loss(
        self,
        model,
        sample: dict,
        rows: Tensor,
        order: Tensor,
        active: Tensor,
        prefix_len: int,
        fake_logits: Tensor,
        logging_output: dict,
    ) -> Tensor:
        """MLE on the clamped prefixes plus the criterion's loss on the sampled suffixes.

        One teacher-forced forward scores every sample of a row that is longer than N,
        and the clamped row once for a row that is not (it contributes MLE only).
        """
        m = self.cfg.num_samples
        first = torch.arange(order.numel(), device=order.device) % m == 0
        scored = active[order] | first
        lprobs = token_log_probs(model, sample, rows[scored], order[scored])
        in_prefix = torch.arange(lprobs.size(1), device=lprobs.device) < prefix_len
        mle = -(lprobs[first[scored]] * in_prefix).sum()
        mle_tokens = rows[first][:, :prefix_len].ne(self.padding_idx).sum()
        fake = active[order[scored]]
        suffix_lprobs = lprobs[fake] * ~in_prefix
        adversarial = self.suffix_loss(
            model, sample, rows[scored][fake], order[scored][fake], fake_logits,
            suffix_lprobs, prefix_len, logging_output,
        )
        total = self.cfg.mle_weight * mle + adversarial
        logging_output.update(
            loss=total.detach(), mle_loss=mle.detach(), mle_tokens=mle_tokens,
            maligan_loss=adversarial.detach(),
        )
        return total

    def suffix_loss(
        self,
        model,
        sample: dict,
        fake_rows: Tensor,
        fake_order: Tensor,
        fake_logits: Tensor,
        suffix_lprobs: Tensor,
        prefix_len: int,
        logging_output: dict,
    ) -> Tensor:
        """The adversarial term on sampled suffixes (``suffix_lprobs`` is 0 elsewhere)."""
        raise NotImplementedError

    def _mle_only(
        self, model, sample: dict, ntokens: int, generator_moves: bool, logging_output: dict
    ):
        """N covers every row: plain MLE (the discriminator has no fake rows to learn from)."""
        if not generator_moves:
            return self._zero_loss(model), ntokens, logging_output
        loss, _ = self.mle_loss(model, sample)
        logging_output.update(
            loss=self.cfg.mle_weight * loss.detach(), mle_loss=loss.detach(), mle_tokens=ntokens
        )
        return self.cfg.mle_weight * loss, ntokens, logging_output

    # -- shared pieces ----------------------------------------------------------------

    def discriminate(self, model, sample: dict, rows: Tensor, order: Tensor) -> Tensor:
        """D's logits for target-side ``rows`` taken from batch rows ``order``."""
        src_tokens = None
        if self.discriminator.source_encoder is not None and is_encoder_decoder(model):
            src_tokens = sample["net_input"]["src_tokens"][order]
        return self.discriminator(rows, src_tokens)

    def discriminator_loss(
        self, real_logits: Tensor, fake_logits: Tensor, logging_output: dict
    ) -> Tensor:
        """The discriminator's loss on this step's rows, logged with its accuracies."""
        loss = discriminator_bce(real_logits, fake_logits)
        logging_output.update(
            disc_loss=loss.detach(),
            disc_updates=1,
            disc_correct_real=real_logits.detach().gt(0).sum(),
            disc_real_rows=real_logits.numel(),
            disc_correct_fake=fake_logits.detach().le(0).sum(),
            disc_fake_rows=fake_logits.numel(),
        )
        return loss

    def mle_loss(self, model, sample: dict) -> tuple[Tensor, int]:
        """Summed NLL of the targets, exactly as fairseq's cross-entropy computes it."""
        net_output = model(**sample["net_input"])
        lprobs = model.get_normalized_probs(net_output, log_probs=True)
        target = model.get_targets(sample, net_output)
        loss = F.nll_loss(
            lprobs.view(-1, lprobs.size(-1)),
            target.view(-1),
            ignore_index=self.padding_idx,
            reduction="sum",
        )
        return loss, _tokens_ntokens(sample, self.padding_idx)

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
    def sample_statistics(self, model, sample: dict, max_len: int | None = None) -> dict:
        """Sample one row per valid row from scratch; D's accuracy and sample lengths."""
        target = sample["target"]
        rows = sample_continuations(model, sample, 0, 1, max_len)
        order = torch.arange(target.size(0), device=target.device)
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            real_logits = self.discriminate(model, sample, target, order)
            fake_logits = self.discriminate(model, sample, rows, order)
        finally:
            self.discriminator.train(was_training)
        return {
            "disc_correct_real": real_logits.gt(0).sum(),
            "disc_real_rows": real_logits.numel(),
            "disc_correct_fake": fake_logits.le(0).sum(),
            "disc_fake_rows": fake_logits.numel(),
            "sample_len_sum": rows.ne(self.padding_idx).sum(),
            "sample_rows": rows.size(0),
            "_rows": rows,
        }

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

    @classmethod
    def reduce_metrics(cls, logging_outputs: list[dict]) -> None:
        def total(key: str) -> float:
            return float(sum(float(log.get(key, 0)) for log in logging_outputs))

        ln2 = math.log(2)
        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / ln2, sample_size, round=3)
        if any("nll_loss" in log for log in logging_outputs):
            metrics.log_scalar(
                "nll_loss", total("nll_loss") / max(sample_size, 1) / ln2, sample_size, round=3
            )
            metrics.log_derived("ppl", lambda meters: 2 ** meters["nll_loss"].avg)

        def ratio(name: str, numerator: str, denominator: str, scale: float = 1.0) -> None:
            count = total(denominator)
            if count > 0:
                metrics.log_scalar(name, total(numerator) / count * scale, count, round=3)

        ratio("mle_loss", "mle_loss", "mle_tokens", 1 / ln2)
        if any("maligan_loss" in log for log in logging_outputs):
            ratio("maligan_loss", "maligan_loss", "sample_size", 1 / ln2)
        ratio("disc_loss", "disc_loss", "disc_updates")
        ratio("disc_acc_real", "disc_correct_real", "disc_real_rows")
        ratio("disc_acc_fake", "disc_correct_fake", "disc_fake_rows")
        ratio("prefix_len", "prefix_len", "batches")
        ratio("ess", "ess_sum", "ess_groups")
        ratio("sample_len", "sample_len_sum", "sample_rows")
        ratio("nll_oracle", "oracle_nll_sum", "oracle_tokens")
        if total("skipped_updates") > 0:
            metrics.log_scalar("skipped_updates", total("skipped_updates"), weight=0, round=0)
        ratio("oracle_invalid", "oracle_invalid_rows", "oracle_rows")


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

    def suffix_loss(self, model, sample, fake_rows, fake_order, fake_logits, suffix_lprobs,
                    prefix_len, logging_output):
        """-sum_ij (w_ij - b) log p(x_ij^{>N} | y_i^{<=N})."""
        m = self.cfg.num_samples
        weights = importance_weights(fake_logits, m)
        baseline = 1.0 / m if self.cfg.baseline == "uniform" else 0.0
        sequence = suffix_lprobs.sum(dim=1).view(-1, m)
        logging_output.update(
            ess_sum=effective_sample_size(weights).sum(), ess_groups=weights.size(0)
        )
        return -((weights.to(sequence) - baseline) * sequence).sum()


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


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The generator inside fairseq's distributed wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


class RolloutCriterion(AdversarialCriterion):
    """Per-token values Q from R Monte-Carlo completions of every sampled prefix."""

    def __init__(self, cfg: RolloutConfig, task) -> None:
        super().__init__(cfg, task)
        if cfg.rollouts < 1:
            raise ConfigError(f"--rollouts must be at least 1, got {cfg.rollouts}")
        if cfg.rollout_max_rows < 1:
            raise ConfigError(
                f"--rollout-max-rows must be at least 1, got {cfg.rollout_max_rows}"
            )

    def rollout_policy(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model that completes prefixes (the generator itself by default)."""
        return unwrap(model)

    def token_weights(self, values: Tensor, valid: Tensor) -> Tensor:
        """Weights (rows, L) of log p(x_t | x_<t) from rollout logits (rows, L, R)."""
        raise NotImplementedError

    def suffix_loss(self, model, sample, fake_rows, fake_order, fake_logits, suffix_lprobs,
                    prefix_len, logging_output):
        """-sum_{i,t} weight_it log p(x_it | x_i,<t) over the sampled tokens."""

        def score(completions: Tensor, order: Tensor) -> Tensor:
            return self.discriminate(model, sample, completions, order)

        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            values = rollout_scores(
                self.rollout_policy(model), sample, fake_rows, fake_order, prefix_len,
                self.cfg.rollouts, score, max_rows=self.cfg.rollout_max_rows,
            )
        finally:
            self.discriminator.train(was_training)
        positions = torch.arange(fake_rows.size(1), device=fake_rows.device)
        valid = (positions >= prefix_len) & fake_rows.ne(self.padding_idx)
        weights = self.token_weights(values, valid)
        return -(weights.to(suffix_lprobs) * suffix_lprobs).sum()


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

    def __init__(self, cfg: SeqGANConfig, task) -> None:
        super().__init__(cfg, task)
        if cfg.rollout_refresh_updates < 1:
            raise ConfigError(
                f"--rollout-refresh-updates must be at least 1, got {cfg.rollout_refresh_updates}"
            )
        if not 0.0 <= cfg.rollout_ema < 1.0:
            raise ConfigError(f"--rollout-ema must be in [0, 1), got {cfg.rollout_ema}")
        self.policy: Optional[torch.nn.Module] = None
        self._pending_policy: dict[str, Tensor] = {}
        self._policy_update = -1

    def rollout_policy(self, model: torch.nn.Module) -> torch.nn.Module:
        generator = unwrap(model)
        if self.policy is None:
            self.policy = copy.deepcopy(generator).requires_grad_(False)
            if self._pending_policy:
                self.policy.load_state_dict(self._pending_policy)
                self._pending_policy = {}
        if self._policy_update != self.num_updates:
            self._policy_update = self.num_updates
            ema = self.cfg.rollout_ema
            with torch.no_grad():
                for beta, theta in zip(self.policy.parameters(), generator.parameters()):
                    if ema > 0:
                        beta.mul_(ema).add_(theta.detach(), alpha=1 - ema)
                    elif self.num_updates % self.cfg.rollout_refresh_updates == 0:
                        beta.copy_(theta.detach())
        return self.policy

    def load_state_dict(self, state_dict: Any, strict: bool = True, **kwargs: Any):
        """Keep the saved rollout policy until the generator is there to copy it."""
        if state_dict and self.policy is None:
            state_dict = dict(state_dict)
            prefix = "policy."
            self._pending_policy = {
                k[len(prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)
            }
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any):
        state = super().state_dict(*args, **kwargs)
        for key, value in self._pending_policy.items():
            state["policy." + key] = value
        return state

    def token_weights(self, values: Tensor, valid: Tensor) -> Tensor:
        return torch.sigmoid(values).mean(dim=2) * valid


def load_discriminator(path: str, dictionary, source_dictionary=None) -> "Discriminator":
    """Load a discriminator saved by ``save_discriminator`` (safe ``weights_only`` load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--disc-path: no such file: {path}") from None
    except Exception as error:
        raise ConfigError(f"--disc-path: cannot read {path}: {error}") from None
    if not isinstance(state, dict) or {"arch", "cfg", "model"} - set(state):
        raise ConfigError(f"--disc-path: {path} is not a saved discriminator")
    disc = build_discriminator(
        state["arch"], MaliganDiscriminatorConfig(**state["cfg"]), dictionary, source_dictionary
    )
    try:
        disc.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ConfigError(
            f"--disc-path: {path} does not fit this data's dictionary: {str(error).splitlines()[0]}"
        ) from None
    return disc


def save_discriminator(disc: Discriminator, arch: str, path: str) -> None:
    """Save a discriminator so that ``--disc-path`` (and ``weights_only`` loading) reads it."""
    cfg = {}
    for key in MaliganDiscriminatorConfig.__dataclass_fields__:
        value = getattr(disc.cfg, key)
        cfg[key] = value if isinstance(value, (int, float, bool)) else str(value)
    torch.save({"arch": arch, "cfg": cfg, "model": disc.state_dict()}, path)
