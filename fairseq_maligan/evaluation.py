"""Evaluating trained generators: samples, NLL-test, NLL-oracle, BLEU and temperature sweeps.

Works on the checkpoints that ``fairseq-train`` writes (stock format, with or without the
plugin), in-process and on CPU. NLLs are in nats per token. A temperature sweep traces a
generator's quality-diversity curve (Caccia et al. 2018, "Language GANs falling short"):
lowering the softmax temperature trades diversity for quality, so GANs and MLE should be
compared as curves, not as single points.

- oracle mode: quality = NLL-oracle of the samples (lower is better), diversity axis =
  NLL-test under the same temperature (lower is better);
- references mode: quality = BLEU-n of the samples against a reference text (higher is
  better), diversity axis = self-BLEU-n of the samples (lower is more diverse); both are
  NLTK's method1 sentence BLEU (see ``metrics``), and every record states the
  tokenization and the number of samples behind self-BLEU (``BLEU_SETTINGS``).

A discriminator is scored the same way wherever it comes from (``discriminator_score``:
real rows of a split against samples of a generator): while it is pretrained, and at the
end of an adversarial run, where the D saved with the run (``run_discriminator``) is
scored on held-out rows, since its accuracy in the training log is on the training rows
it may have memorised.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.data import Dictionary
from fairseq.tasks import FairseqTask
from torch import Tensor, nn

from .discriminators import (
    ARCH_FIELDS,
    Discriminator,
    DiscriminatorConfig,
    discriminator_bce,
    format_rows,
)
from .errors import ConfigError, existing_dir
from .files import GENERATOR, check_file, load_file, safe_loading
from .metrics import TOKENIZERS, ReferenceBLEU, bootstrap_interval, self_bleu_scores
from .oracle import Oracle
from .patches import check_config_strings
from .sampling import (
    banned_tokens,
    is_encoder_decoder,
    output_scores,
    sample_continuations,
    sample_sentences,
)

BLEU_SETTINGS = ("tokenize", "self_bleu_samples")
"""The record fields that say how BLEU and self-BLEU were computed."""


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """``--path``/``--name``/``--data``/``--split``, shared by the evaluation scripts."""
    parser.add_argument("--path", action="extend", nargs="+", required=True,
                        help="generator checkpoint(s)")
    parser.add_argument("--name", action="extend", nargs="+",
                        help="one display name per --path")
    parser.add_argument("--data", type=existing_dir,
                        help="data directory (default: each checkpoint's)")
    parser.add_argument("--split", default="test", help="binarised split for NLL-test")


def add_bleu_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tokenize``/``--self-bleu-samples``, shared by the evaluation scripts."""
    parser.add_argument("--tokenize", choices=list(TOKENIZERS), default="nltk",
                        help="BLEU tokenization of samples and references: nltk (Treebank, "
                        "as the text-GAN papers) or none (whitespace)")
    parser.add_argument("--self-bleu-samples", type=int,
                        help="self-BLEU of the first N samples (default: all)")


def load_generator(
    path: str, data: str | None = None, option: str = "--path"
) -> tuple[nn.Module, FairseqTask]:
    """A saved generator checkpoint and its task, the model in eval mode on CPU.

    ``data`` replaces the data directory recorded in the checkpoint (where the
    dictionaries and binarised splits are looked up). A file that is not a readable
    generator checkpoint, or a data directory without its dictionary, is a
    :class:`ConfigError` naming ``option`` (the command-line option that gave ``path``).
    """
    check_config_strings(load_file(path, option, GENERATOR), path)
    overrides = {} if data is None else {"data": data}
    try:
        with safe_loading():
            models, _, task = checkpoint_utils.load_model_ensemble_and_task(
                [path], arg_overrides=overrides
            )
    except FileNotFoundError as error:
        hint = (f"is {data} the data directory the checkpoint was trained on?" if data
                else "the data directory recorded in the checkpoint; give another with --data")
        raise ConfigError(
            f"{option}: loading {path} needs {error.filename or error}, which does not exist "
            f"({hint})"
        ) from None
    return models[0].eval(), task


def run_discriminator(path: str, generator: nn.Module, task: FairseqTask
                      ) -> tuple[Discriminator, int | None]:
    """The discriminator saved with an adversarial run's checkpoint ``path`` (its
    criterion state; ``generator`` and ``task`` loaded from it), in eval mode, and the
    run's ``--sample-max-len`` (None: the task's limit)."""
    state = load_file(path, "--path", GENERATOR)
    criterion = state["cfg"]["criterion"]
    weights = {key.removeprefix("discriminator."): value
               for key, value in (state.get("criterion") or {}).items()
               if key.startswith("discriminator.")}
    if not weights or any(name not in criterion for name in ARCH_FIELDS):
        raise ConfigError(f"--path: {path} holds no discriminator (not an adversarial run)")
    cfg = DiscriminatorConfig(**{name: criterion[name] for name in ARCH_FIELDS})
    disc = Discriminator(cfg, task.target_dictionary, task.source_dictionary,
                         conditional=is_encoder_decoder(generator))
    disc.load_state_dict(weights)
    return disc.eval(), criterion.get("sample_max_len")


def split_batches(task: FairseqTask, split: str, max_tokens: int, seed: int,
                  epochs: int = 1000):
    """Shuffled batches of a split, epoch after epoch (stock fairseq batching)."""
    task.load_dataset(split)
    for epoch in range(1, epochs + 1):
        iterator = task.get_batch_iterator(
            task.dataset(split), max_tokens=max_tokens, seed=seed, epoch=epoch,
            ignore_invalid_inputs=True,
        ).next_epoch_itr(shuffle=True)
        yield from iterator


def discriminator_logits(disc: Discriminator, generator: nn.Module, sample: dict,
                         prefix_len: int, max_len: int) -> tuple[Tensor, Tensor]:
    """D's logits on the real rows and on one generator sample per row, formatted alike
    (``format_rows``, as in training; ``prefix_len`` > 0 clamps a real prefix)."""
    with torch.no_grad():
        fake = sample_continuations(generator, sample, prefix_len, 1, max_len)
    src = sample["net_input"]["src_tokens"] if is_encoder_decoder(generator) else None
    pad = generator.decoder.dictionary.pad()
    return (disc(format_rows(sample["target"], pad, max_len), src),
            disc(format_rows(fake, pad, max_len), src))


def discriminator_score(disc: Discriminator, generator: nn.Module, task: FairseqTask,
                        split: str, max_tokens: int, seed: int, max_len: int,
                        prefix_len: int = 0) -> tuple[float, float]:
    """D's loss and accuracy on ``split``'s real rows against one sample per row of
    ``generator``, drawn with ``seed`` (the same samples at every call; the caller's
    random state is left as it was). D is left in the mode it was in."""
    was_training = disc.training
    disc.eval()
    loss = correct = total = rows = 0.0
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for sample in split_batches(task, split, max_tokens, seed, epochs=1):
            real, fake = discriminator_logits(disc, generator, sample, prefix_len, max_len)
            loss += float(discriminator_bce(real, fake)) * real.numel()
            rows += real.numel()
            correct += int(real.gt(0).sum()) + int(fake.le(0).sum())
            total += real.numel() + fake.numel()
    disc.train(was_training)
    return loss / max(rows, 1), correct / max(total, 1)


def name_checkpoints(paths: Sequence[str], names: Sequence[str] | None = None) -> dict[str, str]:
    """Display name -> checkpoint path; by default a path's last two components."""
    if names is None:
        names = [os.path.join(*os.path.normpath(p).split(os.sep)[-2:]) for p in paths]
    if len(names) != len(paths):
        raise ConfigError(f"--name: {len(names)} names for {len(paths)} --path checkpoints")
    if len(set(names)) != len(names):
        raise ConfigError(f"--name: checkpoint names must be distinct, got {list(names)}")
    return dict(zip(names, paths))


def sample_rows(
    model: nn.Module, num: int, max_len: int, temperature: float = 1.0, seed: int = 1
) -> Tensor:
    """``num`` free-running samples (token rows, padded), reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return sample_sentences(model, num, max_len, temperature, generator=generator)


def detokenize(rows: Tensor, dictionary: Dictionary) -> list[str]:
    """Token rows to text, one string per row, padding and EOS dropped."""
    pad = dictionary.pad()
    return [dictionary.string(row, extra_symbols_to_ignore={pad}) for row in rows]


def read_references(path: str) -> list[str]:
    """The non-empty lines of a reference text file."""
    check_file(path, "--references")
    try:
        with open(path, encoding="utf-8") as lines:
            references = [line.strip() for line in lines if line.strip()]
    except UnicodeDecodeError:
        raise ConfigError(f"--references: {path} is not a UTF-8 text file") from None
    if not references:
        raise ConfigError(f"--references: no sentences in {path}")
    return references


@torch.no_grad()
def nll_test(
    model: nn.Module,
    task: FairseqTask,
    split: str = "test",
    temperature: float = 1.0,
    max_tokens: int = 8000,
) -> float:
    """Mean per-token NLL (nats) of a binarised split under ``softmax(logits / temperature)``.

    For language models. The split is cut into samples as the checkpoint's task says
    (its ``--sample-break-mode``, ``eos`` for the generators here) and every target token
    counts, EOS included, as in ``fairseq-eval-lm``: at temperature 1 this is its
    "Loss (base 2)" times ln 2 when it is run with the same ``--sample-break-mode``
    (its default, ``none``, scores blocks that run across sentences). Like the sampler,
    it reads the model's distribution through ``sampling.output_scores`` (adaptive
    softmax included); the softmax runs over the whole vocabulary, while the sampler also
    bans padding and BOS, to which a trained model gives next to no probability.
    """
    try:
        task.load_dataset(split)
    except FileNotFoundError as error:
        raise ConfigError(f"no binarised {split!r} split: {error}") from None
    batches = task.eval_lm_dataloader(
        task.dataset(split), max_tokens=max_tokens, max_positions=model.max_positions(),
        num_workers=0,
    )
    pad = task.target_dictionary.pad()
    total, count = 0.0, 0
    for sample in batches:
        logits = output_scores(model, model(**sample["net_input"])).float() / temperature
        lprobs = torch.log_softmax(logits, dim=-1)
        target = sample["target"]
        picked = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        mask = target.ne(pad)
        total -= float(picked[mask].sum())
        count += int(mask.sum())
    if count == 0:
        raise ConfigError(f"split {split!r} has no tokens")
    return total / count


def nll_oracle(oracle: Oracle, rows: Tensor, dictionary: Dictionary) -> tuple[float, float]:
    """NLL-oracle (nats per token) of sampled rows, and the fraction of invalid rows.

    Invalid rows, those that are not exactly an oracle sequence (``Oracle.valid_rows``:
    ``seq_len`` oracle symbols, then EOS), are left out of the NLL; the NLL is NaN when
    every row is invalid.
    """
    scores = oracle.score_rows(rows, oracle.ids_for(dictionary))
    tokens = int(scores["oracle_tokens"])
    nll = float(scores["oracle_nll_sum"]) / tokens if tokens else math.nan
    return nll, scores["oracle_invalid_rows"] / max(scores["oracle_rows"], 1)


def fixed_length_rows(model: nn.Module, num: int, length: int, temperature: float = 1.0,
                      seed: int = 1) -> Tensor:
    """``num`` samples of exactly ``length`` tokens, then EOS: EOS is banned while they
    are drawn, as SeqGAN's generator, which has no EOS, samples its fixed length."""
    dictionary = model.decoder.dictionary
    generator = torch.Generator().manual_seed(seed)
    rows = sample_sentences(model, num, length, temperature, generator=generator,
                            banned=(*banned_tokens(model), dictionary.eos()))
    return torch.cat([rows, rows.new_full((num, 1), dictionary.eos())], dim=1)


def evaluate_generator(
    model: nn.Module,
    task: FairseqTask,
    *,
    num_samples: int,
    max_len: int = 50,
    temperature: float = 1.0,
    seed: int = 1,
    split: str | None = "test",
    oracle: Oracle | None = None,
    bleus: Mapping[int, ReferenceBLEU] | None = None,
    self_bleu_samples: int | None = None,
) -> dict[str, Any]:
    """The metrics of one generator at one temperature, from ``num_samples`` samples.

    - ``split``: ``nll_test`` and ``perplexity`` (``exp(nll_test)``, base e) of that split;
    - ``oracle``: ``nll_oracle`` and ``oracle_invalid`` (the fraction of invalid samples),
      and ``nll_oracle_fixed``, SeqGAN's NLL-oracle: of ``num_samples`` other samples of
      exactly the oracle's length (:func:`fixed_length_rows`), every one scored;
    - ``bleus`` (max order -> reference set): ``bleu{n}`` against the references and
      ``self_bleu{n}`` of the first ``self_bleu_samples`` samples (default: all), for
      every order ``n``, each with ``..._ci``, its 95 % bootstrap interval over the
      samples (:func:`~fairseq_maligan.metrics.bootstrap_interval`), and the
      ``BLEU_SETTINGS`` behind them: ``tokenize`` (the references' tokenization, applied
      to the samples too) and ``self_bleu_samples``.
    """
    results: dict[str, Any] = {}
    if split is not None:
        results["nll_test"] = nll_test(model, task, split, temperature)
        results["perplexity"] = math.exp(results["nll_test"])
    rows = sample_rows(model, num_samples, max_len, temperature, seed)
    if oracle is not None:
        results["nll_oracle"], results["oracle_invalid"] = nll_oracle(
            oracle, rows, task.target_dictionary
        )
        fixed = fixed_length_rows(model, num_samples, oracle.seq_len, temperature, seed)
        results["nll_oracle_fixed"] = nll_oracle(oracle, fixed, task.target_dictionary)[0]
    if bleus:
        tokenize = {bleu.tokenize for bleu in bleus.values()}
        if len(tokenize) > 1:
            raise ConfigError(f"BLEU reference sets with different tokenizations: {tokenize}")
        count = num_samples if self_bleu_samples is None else self_bleu_samples
        if not 2 <= count <= num_samples:
            raise ConfigError(
                f"--self-bleu-samples must be between 2 and --num-samples ({num_samples}), "
                f"got {count}"
            )
        lines = detokenize(rows, task.target_dictionary)
        for order, bleu in bleus.items():
            for name, scores in (
                (f"bleu{order}", bleu.sentence_scores(lines)),
                (f"self_bleu{order}", self_bleu_scores(lines[:count], order, bleu.tokenize)),
            ):
                results[name] = sum(scores) / len(scores)
                results[f"{name}_ci"] = list(bootstrap_interval(scores, seed=seed))
        results.update(tokenize=tokenize.pop(), self_bleu_samples=count)
    return results


def temperature_sweep(
    checkpoints: Mapping[str, str],
    temperatures: Sequence[float],
    num_samples: int,
    *,
    oracle: str | None = None,
    references: str | None = None,
    data: str | None = None,
    split: str = "test",
    max_order: int = 5,
    max_len: int = 50,
    seed: int = 1,
    tokenize: str = "nltk",
    self_bleu_samples: int | None = None,
) -> list[dict[str, Any]]:
    """Quality and diversity of every checkpoint (name -> path) at every temperature.

    Exactly one of ``oracle`` (an ``oracle.pt``; needs the binarised ``split``) and
    ``references`` (a text file; BLEU-``max_order`` and self-BLEU-``max_order`` with
    ``tokenize`` and ``self_bleu_samples``, see :func:`evaluate_generator`) is given.
    Returns one record per (checkpoint, temperature): ``name``, ``temperature``,
    ``quality``, ``diversity``, the metric names behind them and every metric computed.
    All points draw from the same seed.
    """
    if (oracle is None) == (references is None):
        raise ConfigError("a temperature sweep needs exactly one of --oracle and --references")
    if oracle is not None:
        oracle_model, bleus, test_split = Oracle.load(oracle, "--oracle"), None, split
        quality, diversity = "nll_oracle_fixed", "nll_test"
    else:
        bleus = {max_order: ReferenceBLEU(read_references(references), max_order, tokenize)}
        oracle_model, test_split = None, None
        quality, diversity = f"bleu{max_order}", f"self_bleu{max_order}"
    records = []
    for name, path in checkpoints.items():
        model, task = load_generator(path, data)
        for temperature in temperatures:
            metrics = evaluate_generator(
                model, task, num_samples=num_samples, max_len=max_len,
                temperature=temperature, seed=seed, split=test_split,
                oracle=oracle_model, bleus=bleus, self_bleu_samples=self_bleu_samples,
            )
            records.append({
                "name": name, "temperature": temperature,
                "quality": metrics[quality], "diversity": metrics[diversity],
                "quality_metric": quality, "diversity_metric": diversity, **metrics,
            })
    return records


def lower_is_better(metric: str) -> bool:
    """NLLs and self-BLEU improve downwards, BLEU and a classifier's confidence upwards."""
    return not metric.startswith(("bleu", "classifier"))


def _placed(record: Mapping[str, Any]) -> bool:
    """Whether a sweep point has both values (NLL-oracle is undefined without valid samples)."""
    return math.isfinite(record["quality"]) and math.isfinite(record["diversity"])


def _baseline_segments(records: Sequence[Mapping[str, Any]], baseline: str) -> list[tuple]:
    """The baseline's curve: each point, and each pair of neighbouring temperatures with
    both points placed (no line is drawn to a point with an undefined value)."""
    if not any(r["name"] == baseline for r in records):
        raise ConfigError(f"no sweep points of the baseline {baseline!r}")
    curve = sorted((r for r in records if r["name"] == baseline), key=lambda r: r["temperature"])
    return [(a, a) for a in curve if _placed(a)] + [
        (a, b) for a, b in zip(curve, curve[1:]) if _placed(a) and _placed(b)]


def beyond_baseline(records: Sequence[Mapping[str, Any]], baseline: str) -> dict[str, list]:
    """The sweep points of each other model that no temperature of ``baseline`` reaches.

    The baseline's points, in temperature order, are joined by straight lines (the
    temperatures in between); a point is beyond the baseline when no point of that curve
    is at least as good on both quality and diversity (each in its own direction,
    :func:`lower_is_better`). A point with an undefined value (NLL-oracle of a model with
    no valid sample) is not on the plane: it is never beyond, and no line is drawn to it.
    Returns name -> the temperatures of its points beyond; an empty list means the
    baseline's swept temperatures cover that model.
    """
    def covers(a: Mapping[str, Any], b: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
        """Some point of the segment a -> b is at least as good as ``point`` on both axes."""
        low, high = 0.0, 1.0
        for axis in ("quality", "diversity"):
            sign = 1 if lower_is_better(point[f"{axis}_metric"]) else -1
            start, slope = sign * a[axis], sign * (b[axis] - a[axis])
            target = sign * point[axis]
            if slope == 0:
                if start > target:
                    return False
            elif slope > 0:
                high = min(high, (target - start) / slope)
            else:
                low = max(low, (target - start) / slope)
        return low <= high

    segments = _baseline_segments(records, baseline)
    beyond: dict[str, list] = {}
    for record in records:
        if record["name"] == baseline:
            continue
        beyond.setdefault(record["name"], [])
        if _placed(record) and not any(covers(a, b, record) for a, b in segments):
            beyond[record["name"]].append(record["temperature"])
    return beyond


def past_baseline_range(records: Sequence[Mapping[str, Any]], baseline: str) -> dict[str, list]:
    """Of each model's points beyond ``baseline`` (:func:`beyond_baseline`), those whose
    diversity lies outside the range the baseline's swept temperatures span.

    Those are not evidence of a gain: a temperature of the baseline outside the sweep may
    reach them. A beyond point inside that range beats the baseline's curve at equal
    diversity. Returns name -> temperatures (empty when none is past the range).
    """
    spanned = [r["diversity"] for r in records if r["name"] == baseline and _placed(r)]
    low, high = (min(spanned), max(spanned)) if spanned else (math.inf, -math.inf)
    beyond = beyond_baseline(records, baseline)
    return {name: [r["temperature"] for r in records if r["name"] == name
                   and r["temperature"] in temperatures and not low <= r["diversity"] <= high]
            for name, temperatures in beyond.items()}


def baseline_quality_at(records: Sequence[Mapping[str, Any]], baseline: str,
                        diversity: float) -> float:
    """The quality of ``baseline`` at ``diversity``: its sweep points joined by straight
    lines in temperature order (as :func:`beyond_baseline`), read where the curve has that
    diversity; the best such quality where it has it more than once, NaN where the swept
    temperatures never reach it."""
    segments = _baseline_segments(records, baseline)
    found = []
    for a, b in segments:
        low, high = sorted((a["diversity"], b["diversity"]))
        if not low <= diversity <= high:
            continue
        share = 0.0 if high == low else (diversity - a["diversity"]) / (
            b["diversity"] - a["diversity"])
        found.append(a["quality"] + share * (b["quality"] - a["quality"]))
    if not found:
        return math.nan
    return (min if lower_is_better(segments[0][0]["quality_metric"]) else max)(found)


def plot_sweep(records: Sequence[Mapping[str, Any]], path: str, xlabel: str, ylabel: str) -> None:
    """Quality (x) against diversity (y), one curve per checkpoint, points labelled by T.

    Draws on matplotlib's Agg canvas (no display needed); matplotlib is imported here
    so that the other functions do not pay for it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    names = dict.fromkeys(record["name"] for record in records)
    for name in names:
        points = sorted(
            (r["temperature"], r["quality"], r["diversity"]) for r in records if r["name"] == name
        )
        axes.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=name)
        for temperature, x, y in points:
            axes.annotate(f"T={temperature:g}", (x, y), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def format_table(records: Sequence[Mapping[str, Any]], settings: Sequence[str] = ()) -> str:
    """Records as a text table, one column per key (floats to 4 decimals, an interval as
    ``low..high``, "-" if missing).

    Keys in ``settings`` (e.g. ``BLEU_SETTINGS``) are not columns: their values are
    stated on a line under the table.
    """
    columns = list(dict.fromkeys(
        key for record in records for key in record if key not in settings
    ))
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return f"{value[0]:.4f}..{value[1]:.4f}"
        return str(value)

    cells = [[cell(r.get(c, "-")) for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = [columns, *cells]
    table = [
        "  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])])
        for line in lines
    ]
    stated = [f"{key}={value}" for key in settings
              for value in dict.fromkeys(r[key] for r in records if key in r)]
    return "\n".join(table + ([", ".join(stated)] if stated else []))
