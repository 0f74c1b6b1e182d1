"""Benchmark the samplers and the adversarial criteria against their baselines, in one run.

    python scripts/bench.py                  # full run on CPU (several minutes)
    python scripts/bench.py --quick          # tiny sizes, 1 trial (what the test runs)
    python scripts/bench.py --device cuda --large   # GPU, plus tokens/s of a ~124M LM
    python scripts/bench.py --profile        # also profile one maligan_mixed / seqgan update

Everything is built in-process from fairseq command-line arguments, as ``fairseq-train``
would: synthetic oracle text (``fairseq_maligan.oracle``) over a fixed vocabulary is
binarised with ``fairseq-preprocess --srcdict`` into a temporary directory, batches come
from the task's own dataset and collater, and every update is ``task.train_step`` (model
and criterion in train mode, forward + backward). Candidates that are compared are timed
in interleaved rounds (one warm-up round excluded) and the median is kept: the machine
is shared and noisy, so the ratios, not the absolute times, are the point.

EOS is banned in the project's samplers for the whole run (their ``banned`` parameter,
inside training steps through the criterion's ``sampler_options``/``rollout_options``;
nothing in the package is replaced) and fairseq's
``SequenceGenerator`` runs with ``min_len = max_len``, so every sample is exactly T
tokens long and all samplers do the same number of decoder steps.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import math
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import fairseq_maligan  # noqa: F401  (registers the plugin's task and criteria)
from fairseq_maligan import criterions as maligan_criterions
from fairseq_maligan import sampling
from fairseq_maligan.oracle import Oracle, oracle_symbol

warnings.filterwarnings("ignore")

TRANSFORMER_7M = [
    "--arch", "transformer_lm", "--decoder-layers", "6", "--decoder-embed-dim", "256",
    "--decoder-ffn-embed-dim", "1024", "--decoder-attention-heads", "4",
    "--decoder-input-dim", "256", "--decoder-output-dim", "256",
]
LSTM_7M = ["--arch", "lstm_lm"]  # fairseq defaults: embed 512, hidden 512, 1 layer
TRANSFORMER_124M = ["--arch", "transformer_lm_gpt", "--share-decoder-input-output-embed"]
TINY_TRANSFORMER = [
    "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
    "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
    "--decoder-input-dim", "32", "--decoder-output-dim", "32",
]
TINY_LSTM = [
    "--arch", "lstm_lm", "--decoder-embed-dim", "32", "--decoder-hidden-size", "32",
    "--decoder-out-embed-dim", "32",
]
TOKENS_PER_SAMPLE = 128


@dataclass
class Sizes:
    """Every size and trial count the benchmark uses; ``--quick`` swaps in tiny ones."""

    vocab: int = 5000
    batch: int = 32
    samples: int = 4
    length: int = 30
    rollout_rows: int = 4  # sampled rows: seqgan B=4 x m=1, maligan_rollout B=1 x m=4
    rollout_length: int = 20
    rollouts: int = 16
    grouping_rows: int = 60  # rows of the grouping measurement (60 x R = 960 per step)
    sweep_batch: int = 16
    sweep_lengths: tuple[int, ...] = (10, 20, 40, 80)
    sweep_samples: tuple[int, ...] = (1, 2, 4, 8)
    sweep_samples_length: int = 20
    memory_batch: int = 64
    trials: int = 3  # timed rounds of everything but the two below
    naive_trials: int = 2  # sample_naive (tens of seconds a call on CPU)
    rollout_trials: int = 2  # seqgan / maligan_rollout updates, batched rollouts
    rollout_naive_trials: int = 1  # the same with naive rollouts (about a minute a call)
    archs: dict[str, list[str]] = field(
        default_factory=lambda: {"transformer_lm": TRANSFORMER_7M, "lstm_lm": LSTM_7M}
    )
    large_vocab: int = 50000
    large_batch: int = 32

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            vocab=200, batch=4, samples=2, length=8, rollout_rows=2, rollout_length=6,
            rollouts=2, grouping_rows=2, sweep_batch=2, sweep_lengths=(4, 8), sweep_samples=(1, 2),
            sweep_samples_length=8, memory_batch=8, trials=1, naive_trials=1,
            rollout_trials=1, rollout_naive_trials=1,
            archs={"transformer_lm": TINY_TRANSFORMER, "lstm_lm": TINY_LSTM},
            large_vocab=1000, large_batch=2,
        )

    def set_trials(self, trials: int) -> None:
        """``--trials``: every count becomes ``trials`` at most (the fast ones exactly)."""
        self.trials = trials
        for name in ("naive_trials", "rollout_trials", "rollout_naive_trials"):
            setattr(self, name, min(getattr(self, name), trials))

    def trial_note(self) -> str:
        return (f"median of {self.trials} timed rounds ({self.naive_trials} for sample_naive, "
                f"{self.rollout_trials}/{self.rollout_naive_trials} for batched/naive rollout "
                "updates) after one warm-up round")

    def data_lengths(self) -> list[int]:
        return sorted({self.length, self.rollout_length, self.sweep_samples_length,
                       *self.sweep_lengths})


# -- data, models, criteria ------------------------------------------------------------


def quiet_logging() -> None:
    """fairseq logs INFO lines to stdout; the report should hold only the report."""
    logging.getLogger().setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("fairseq", "fairseq_cli", "fairseq_maligan")):
            logging.getLogger(name).setLevel(logging.WARNING)


def prepare_data(out: Path, vocab: int, lengths: list[int], rows: int, seed: int = 0) -> dict:
    """Oracle text with targets of exactly T tokens (T - 1 symbols + EOS) for each T.

    Written over a fixed dictionary ``w0 .. w{vocab-1}`` and binarised by one in-process
    ``fairseq-preprocess`` run: the first length becomes ``train``, the others ``valid``,
    ``valid1``, ... Returns ``{"data": dir, "splits": {str(T): split}}`` (JSON-safe, for
    the memory subprocesses).
    """
    from fairseq import options
    from fairseq_cli import preprocess

    quiet_logging()
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    dict_path = raw / "dict.txt"
    dict_path.write_text("".join(f"{oracle_symbol(i)} 1\n" for i in range(vocab)))
    files, splits = [], {}
    for k, length in enumerate(lengths):
        oracle = Oracle(vocab, length - 1, 8, 8, seed + length)
        ids = oracle.sample(rows, torch.Generator().manual_seed(seed))
        path = raw / f"len{length}.txt"
        path.write_text("".join(" ".join(map(oracle_symbol, r)) + "\n" for r in ids.tolist()))
        files.append(str(path))
        splits[str(length)] = "train" if k == 0 else ("valid" if k == 1 else f"valid{k - 1}")
    argv = ["--only-source", "--srcdict", str(dict_path), "--trainpref", files[0],
            "--destdir", str(out / "bin"), "--workers", "1"]
    if len(files) > 1:
        argv += ["--validpref", ",".join(files[1:])]
    preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    quiet_logging()
    return {"data": str(out / "bin"), "splits": splits}


def parse(data: str, arch: list[str], criterion: list[str]) -> Namespace:
    """fairseq's training arguments for ``maligan_language_modeling`` (command-line form)."""
    from fairseq import options

    return options.parse_args_and_arch(options.get_training_parser(), [
        data, "--task", "maligan_language_modeling", "--cpu", "--sample-break-mode", "eos",
        "--tokens-per-sample", str(TOKENS_PER_SAMPLE), *arch, *criterion,
    ])


class Generator:
    """A fairseq generator with its task; builds criteria and batches for it."""

    def __init__(self, name: str, data: dict, arch: list[str], device: torch.device) -> None:
        from fairseq import tasks

        self.name, self.data, self.arch, self.device = name, data, arch, device
        # fairseq's registries fill the task's, model's and criteria's dataclasses from the
        # parsed arguments (what fairseq-train gets via a slower omegaconf conversion).
        args = parse(data["data"], arch, ["--criterion", "cross_entropy"])
        self.task = tasks.setup_task(args)
        torch.manual_seed(0)
        self.model = self.task.build_model(args).to(device)
        self.dictionary = self.task.target_dictionary
        self.params = sum(p.numel() for p in self.model.parameters())
        self.update_num = 0

    def criterion(self, options: list[str], length: int | None = None) -> Any:
        """A criterion built by the task from ``--criterion ...`` options.

        ``length``: the batch's target length, the samples' cap (``--sample-max-len``), so
        that with EOS banned every sample has exactly that many tokens.
        """
        cap = [] if length is None else ["--sample-max-len", str(length)]
        args = parse(self.data["data"], self.arch, [*options, *cap])
        criterion = self.task.build_criterion(args).to(self.device)
        if length is not None:
            criterion.sampler_options = {"banned": without_eos(self.model)}
            criterion.rollout_options = {"banned": without_eos(self.model)}
        return criterion

    def batch(self, rows: int, length: int) -> dict:
        """``rows`` sentences of exactly ``length`` target tokens, collated by the dataset."""
        split = self.data["splits"][str(length)]
        if split not in self.task.datasets:
            self.task.load_dataset(split)
        dataset = self.task.dataset(split)
        sample = dataset.collater([dataset[i] for i in range(rows)])
        assert sample["target"].shape == (rows, length), sample["target"].shape
        return move(sample, self.device)

    def update(self, criterion: Any, sample: dict) -> None:
        """One training update's forward + backward, as fairseq's trainer runs it."""
        self.model.zero_grad(set_to_none=True)
        criterion.zero_grad(set_to_none=True)
        criterion.train()
        self.update_num += 1
        self.task.train_step(sample, self.model, criterion, Backward(), self.update_num)


class Backward:
    """The one optimizer method ``task.train_step`` calls."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()


def move(sample: Any, device: torch.device) -> Any:
    if isinstance(sample, torch.Tensor):
        return sample.to(device)
    if isinstance(sample, dict):
        return {k: move(v, device) for k, v in sample.items()}
    return sample


NAIVE_SAMPLER = "sampling.sample_continuations(recompute_prefix=True)"
NAIVE_ROLLOUTS = "sampling.rollout_scores(recompute_prefix=True)"


def without_eos(model: torch.nn.Module) -> tuple[int, ...]:
    """The sampler's banned tokens plus EOS: every sample runs to the length limit."""
    return (*sampling.banned_tokens(model), model.decoder.dictionary.eos())


def sample_fixed(model: torch.nn.Module, sample: dict, prefix_len: int, num_samples: int,
                 max_len: int, **options: Any) -> torch.Tensor:
    """The project's sampler with EOS banned: samples of exactly ``max_len`` tokens."""
    return sampling.sample_continuations(model, sample, prefix_len, num_samples, max_len,
                                         banned=without_eos(model), **options)


def sample_naive(model: torch.nn.Module, sample: dict, prefix_len: int, num_samples: int,
                 max_len: int) -> torch.Tensor:
    """The reference sampler: the whole sequence is recomputed at every step (no cache)."""
    return sample_fixed(model, sample, prefix_len, num_samples, max_len, recompute_prefix=True)


# -- timing ------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(candidates: dict[str, Callable[[], Any]], trials: int, device: torch.device,
            fewer: dict[str, int] | None = None,
            warmups: dict[str, Callable[[], Any]] | None = None) -> dict[str, float]:
    """Median seconds per candidate over interleaved rounds, after one warm-up round.

    Each round runs every candidate once (so slow drifts of a shared machine hit all of
    them alike); a candidate named in ``fewer`` takes part in that many timed rounds
    only, and one named in ``warmups`` is warmed up by that cheaper call instead.
    """
    fewer, warmups = fewer or {}, warmups or {}
    for name, fn in candidates.items():
        warmups.get(name, fn)()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(trials):
        for name, fn in candidates.items():
            if round_index >= fewer.get(name, trials):
                continue
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (the power law's exponent)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


class Report:
    """The printed report plus a machine-readable copy of every ratio."""

    def __init__(self) -> None:
        self.ratios: dict[str, float] = {}
        self.exponents: dict[str, float] = {}
        self.verdicts: dict[str, bool] = {}

    @staticmethod
    def line(text: str = "") -> None:
        print(text, flush=True)

    def ratio(self, key: str, label: str, value: float, target: str,
              passed: bool | None, unit: str = "x") -> None:
        (self.ratios if unit == "x" else self.exponents)[key] = value
        verdict = "" if passed is None else ("PASS" if passed else "MISS")
        if passed is not None:
            self.verdicts[key] = passed
        self.line(f"    {label:<46} {value:7.2f}{unit:<2} {target:<24} {verdict}".rstrip())


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


# -- sections ----------------------------------------------------------------------------


def sequence_generator_sampler(gen: Generator, rows: int, length: int) -> Callable[[], Any]:
    """fairseq's SequenceGenerator sampling ``rows`` sequences of ``length`` tokens, beam 1."""
    eos = gen.dictionary.eos()
    generator = gen.task.build_generator([gen.model], Namespace(
        sampling=True, beam=1, sampling_topk=-1, sampling_topp=-1.0, temperature=1.0,
        max_len_a=0, max_len_b=length - 1, min_len=length - 1,
    ))
    src = torch.full((rows, 1), eos, dtype=torch.long, device=gen.device)
    sample = {"net_input": {"src_tokens": src,
                            "src_lengths": torch.ones(rows, dtype=torch.long, device=gen.device)}}

    def run() -> list:
        hypos = generator.generate([gen.model], sample, bos_token=eos)
        assert all(len(h[0]["tokens"]) == length for h in hypos)
        return hypos

    return run


def draw_softmax_cumsum(logits: torch.Tensor, uniform: torch.Tensor,
                        banned: tuple[int, ...]) -> torch.Tensor:
    """The token draw as it was first written: a softmax, then a cumsum into a new tensor."""
    logits = logits.float().clone()
    logits[:, list(banned)] = float("-inf")
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    return torch.searchsorted(cdf, uniform.unsqueeze(1) * cdf[:, -1:], right=True).squeeze(1)


def draw_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device) -> None:
    """One token draw for B x m rows over the vocabulary: in-place CDF vs softmax + cumsum."""
    rows = sizes.batch * sizes.samples * sizes.rollouts // 4
    logits = torch.randn(rows, len(gen.dictionary), device=device)
    uniform = torch.rand(rows, device=device)
    banned = sampling.banned_tokens(gen.model)
    assert torch.equal(sampling.draw_tokens(logits, uniform, banned=banned),
                       draw_softmax_cumsum(logits, uniform, banned))
    times = compare(
        {"in_place": lambda: sampling.draw_tokens(logits, uniform, banned=banned),
         "softmax": lambda: draw_softmax_cumsum(logits, uniform, banned)},
        sizes.trials * 10, device,
    )
    report.line(f"  one draw, {rows} rows x V={len(gen.dictionary)}: sampling.draw_tokens "
                f"{ms(times['in_place'])} | softmax + cumsum {ms(times['softmax'])}")
    report.ratio("sampler.draw.softmax_over_in_place", "draw: softmax + cumsum / in place",
                 times["softmax"] / times["in_place"], "(no target)", None)


def sampler_section(gens: list[Generator], sizes: Sizes, report: Report,
                    device: torch.device) -> None:
    b, m, t = sizes.batch, sizes.samples, sizes.length
    report.line(f"[1] sampler: B={b} rows x m={m} samples, T={t}, N=0, model.eval(); every "
                "sample exactly T tokens")
    draw_section(gens[0], sizes, report, device)
    for gen in gens:
        gen.model.eval()
        sample = gen.batch(b, t)
        pad = gen.dictionary.pad()

        def incremental(gen: Generator = gen, sample: dict = sample, pad: int = pad) -> None:
            rows = sample_fixed(gen.model, sample, 0, m, t)
            assert rows.shape == (b * m, t) and not bool(rows.eq(pad).any())

        def naive(gen: Generator = gen, sample: dict = sample, length: int = t) -> None:
            sample_naive(gen.model, sample, 0, m, length)

        times = compare(
            {"incremental": incremental, "naive": naive,
             "seqgen": sequence_generator_sampler(gen, b * m, t)},
            sizes.trials, device, fewer={"naive": sizes.naive_trials},
            warmups={"naive": lambda naive=naive: naive(length=min(t, 5))},
        )
        report.line(f"  {gen.name} ({gen.params / 1e6:.2f}M params): incremental "
                    f"{ms(times['incremental'])} | sample_naive {ms(times['naive'])} | "
                    f"SequenceGenerator {ms(times['seqgen'])}")
        naive_ratio = times["naive"] / times["incremental"]
        seqgen = times["seqgen"] / times["incremental"]
        report.ratio(f"sampler.{gen.name}.naive_over_incremental", "sample_naive / incremental",
                     naive_ratio, "target >= 10x", naive_ratio >= 10)
        report.ratio(f"sampler.{gen.name}.seqgen_over_incremental",
                     "SequenceGenerator / incremental", seqgen, "target >= 2.5x", seqgen >= 2.5)
        gen.model.train()


def update_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device) -> None:
    b, m, t = sizes.batch, sizes.samples, sizes.length
    half = t // 2
    mle = gen.criterion(["--criterion", "cross_entropy"])
    mixed = {
        n: gen.criterion(["--criterion", "maligan_mixed", "--num-samples", str(m),
                          "--prefix-init", str(n), "--prefix-decay", "0"], t)
        for n in (0, half)
    }
    sample = gen.batch(b, t)
    times = compare({
        "mle": lambda: gen.update(mle, sample),
        **{f"mixed{n}": (lambda c=c: gen.update(c, sample)) for n, c in mixed.items()},
    }, sizes.trials, device)
    report.line(f"  {gen.name}, B={b}, T={t}: MLE update {ms(times['mle'])} | maligan_mixed "
                f"N=0 {ms(times['mixed0'])} | N={half} {ms(times[f'mixed{half}'])}")
    r0 = times["mixed0"] / times["mle"]
    rhalf = times[f"mixed{half}"] / times["mle"]
    report.ratio(f"update.{gen.name}.maligan_mixed_N0", f"maligan_mixed m={m} N=0 / MLE",
                 r0, "target <= 6x", r0 <= 6)
    report.ratio(f"update.{gen.name}.maligan_mixed_Nhalf", f"maligan_mixed m={m} N={half} / MLE",
                 rhalf, f"target < N=0 ({r0:.2f}x)", rhalf < r0)


def rollout_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device) -> None:
    t, r = sizes.rollout_length, sizes.rollouts
    for name, m in (("seqgan", 1), ("maligan_rollout", sizes.samples)):
        b = max(sizes.rollout_rows // m, 1)
        sample = gen.batch(b, t)
        mle = gen.criterion(["--criterion", "cross_entropy"])

        def build(rollouts: int, *extra: str, name: str = name, m: int = m) -> Any:
            return gen.criterion(["--criterion", name, "--num-samples", str(m), "--rollouts",
                                  str(rollouts), "--prefix-init", "0", "--prefix-decay", "0",
                                  *extra], t)

        crit, warm = build(r), build(1)
        per_step = build(r, "--rollout-max-rows", "1")

        naive_crit = build(r)
        naive_crit.rollout_options = {**naive_crit.rollout_options, "recompute_prefix": True}

        def naive(crit: Any = naive_crit, sample: dict = sample) -> None:
            gen.update(crit, sample)

        times = compare(
            {"mle": lambda mle=mle, sample=sample: gen.update(mle, sample),
             "batched": lambda crit=crit, sample=sample: gen.update(crit, sample),
             "per_step": lambda crit=per_step, sample=sample: gen.update(crit, sample),
             "naive": naive},
            max(sizes.trials, sizes.rollout_trials), device,
            fewer={"batched": sizes.rollout_trials, "per_step": sizes.rollout_trials,
                   "naive": sizes.rollout_naive_trials},
            warmups={"naive": lambda warm=warm: naive(warm)},  # warm-up with R=1
        )
        report.line(f"  {gen.name} {name}: B={b} x m={m}, T={t}, R={r}: MLE {ms(times['mle'])}"
                    f" | batched rollouts {ms(times['batched'])} (one start step per batch: "
                    f"{ms(times['per_step'])}) | naive {ms(times['naive'])}")
        report.ratio(f"rollout.{gen.name}.{name}.per_step_over_batched",
                     f"{name} update: one start step per batch / steps grouped up to "
                     f"--rollout-max-rows {maligan_criterions.RolloutConfig.rollout_max_rows}",
                     times["per_step"] / times["batched"], "(no target)", None)
        report.ratio(f"rollout.{gen.name}.{name}.batched_over_mle", f"{name} (batched) / MLE",
                     times["batched"] / times["mle"], "(no target)", None)
        report.ratio(f"rollout.{gen.name}.{name}.naive_over_mle", f"{name} (naive) / MLE",
                     times["naive"] / times["mle"], "(no target)", None)
        speedup = times["naive"] / times["batched"]
        report.ratio(f"rollout.{gen.name}.{name}.naive_over_batched",
                     f"{name} update: naive / batched rollouts", speedup, "target >= 10x",
                     speedup >= 10)


def updates_and_rollouts(gens: list[Generator], sizes: Sizes, report: Report,
                         device: torch.device) -> None:
    for gen in gens:
        update_section(gen, sizes, report, device)
    report.line(f"  rollouts: batched = sampling.rollout_scores (forked decoder states); "
                f"naive = {NAIVE_ROLLOUTS} (every completion recomputes its whole prefix at "
                "every step), warmed up with R=1")
    rollout_section(gens[0], sizes, report, device)


def grouping_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device) -> None:
    """``rollout_scores`` alone where one start step nearly fills ``--rollout-max-rows``:
    1, 2 or 4 start steps per decoding batch, for the synthetic oracle's generator
    (``lstm_lm``, hidden 32, V = 5,000, where the draws over V dominate)."""
    b, t, r = sizes.grouping_rows, sizes.rollout_length, sizes.rollouts
    sample = gen.batch(b, t)
    order = torch.arange(b, device=device)
    gen.model.eval()

    def run(steps: int) -> Callable[[], Any]:
        return lambda: sampling.rollout_scores(
            gen.model, sample, sample["target"], order, 0, r,
            lambda tokens, batch_order: tokens.float().mean(dim=1), t, max_rows=steps * b * r,
            banned=without_eos(gen.model))

    times = compare({str(steps): run(steps) for steps in (1, 2, 4)}, sizes.rollout_trials,
                    device)
    gen.model.train()
    report.line(f"  {gen.name} rollout_scores alone, B={b}, T={t}, R={r} ({b * r} completions "
                f"per start step): " + " | ".join(
                    f"{steps} step(s) per batch {ms(times[str(steps)])}" for steps in (1, 2, 4)))
    for steps in (2, 4):
        report.ratio(f"rollout.{gen.name}.grouped{steps}_over_per_step",
                     f"rollout_scores: {steps} steps per batch / 1",
                     times[str(steps)] / times["1"], "(no target)", None)


def scaling_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device) -> None:
    b = sizes.sweep_batch
    m_fixed, t_fixed = sizes.samples, sizes.sweep_samples_length
    lengths = sorted({*sizes.sweep_lengths, t_fixed})
    crits = {
        (m, t): gen.criterion(["--criterion", "maligan_mixed", "--num-samples", str(m),
                               "--prefix-init", "0", "--prefix-decay", "0",
                               "--baseline", "uniform" if m > 1 else "zero"], t)
        for m in sorted({*sizes.sweep_samples, m_fixed}) for t in lengths
    }
    batches = {t: gen.batch(b, t) for t in lengths}
    by_t = compare({str(t): (lambda t=t: gen.update(crits[m_fixed, t], batches[t]))
                    for t in sizes.sweep_lengths}, sizes.trials, device)
    by_m = compare({str(m): (lambda m=m: gen.update(crits[m, t_fixed], batches[t_fixed]))
                    for m in sizes.sweep_samples}, sizes.trials, device)
    for axis, label, values, fixed in (
        ("T", "T", by_t, f"m={m_fixed}"), ("m", "m", by_m, f"T={t_fixed}")
    ):
        xs = [float(k) for k in values]
        ys = list(values.values())
        cells = "  ".join(f"{label}={k}: {v * 1e3:.1f} ms" for k, v in values.items())
        report.line(f"  {gen.name} B={b}, {fixed}, N=0: {cells}")
        slope = loglog_slope(xs, ys)
        report.ratio(f"scaling.{gen.name}.exponent_{axis}",
                     f"fitted exponent k of time ~ {label}^k", slope, "target 0.75..1.25",
                     0.75 <= slope <= 1.25, unit="")


def current_rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def reset_rss_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def rss_peak_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(spec: dict) -> dict:
    """In a fresh process: the peak memory that one update adds above the steady state."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    gen = Generator(spec["arch_name"], spec["data"], spec["arch"], device)
    adversarial = "cross_entropy" not in spec["criterion"]
    crit = gen.criterion(spec["criterion"], spec["length"] if adversarial else None)
    return measure_update_memory(gen, crit, spec, device)


def measure_update_memory(gen: Generator, crit: Any, spec: dict, device: torch.device) -> dict:
    """RSS (and CUDA) peak of one update above the memory in use just before it."""
    gen.update(crit, gen.batch(2, spec["length"]))  # lazy initialisation, not measured
    sample = gen.batch(spec["batch"], spec["length"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before_cuda = torch.cuda.memory_allocated(device)
    before = current_rss_kib()
    exact = reset_rss_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen.update(crit, sample)
    result = {"rss_before_kib": before, "exact_peak": exact}
    if exact:
        result["peak_delta_kib"] = rss_peak_kib() - before
    else:  # the high-water mark could not be reset: getrusage's, valid if it moved
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_delta_kib"] = max(maxrss_after - before, 0)
        result["maxrss_moved"] = maxrss_after > maxrss_before
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["cuda_peak_delta_bytes"] = torch.cuda.max_memory_allocated(device) - before_cuda
    return result


def run_memory_children(specs: list[dict]) -> list[dict]:
    """Each spec's ``memory_child`` in its own fresh interpreter (run side by side).

    glibc's malloc is told to hand freed blocks back at once (mmap above 64 KiB, no trim
    threshold): otherwise an update can reuse heap freed while the model was built, and
    a small update's peak reads as zero above the RSS before it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "0"}
    procs = [
        subprocess.Popen([sys.executable, __file__, "--memory-child", json.dumps(spec)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**env, "OMP_NUM_THREADS": str(spec["threads"])})
        for spec in specs
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"memory subprocess failed:\n{out[-2000:]}{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def memory_section(gen: Generator, sizes: Sizes, report: Report, device: torch.device,
                   threads: int) -> None:
    b, m, t = sizes.memory_batch, sizes.samples, sizes.length
    base = {"data": gen.data, "arch": gen.arch, "arch_name": gen.name, "batch": b,
            "length": t, "device": str(device), "threads": threads}
    mle, mixed = run_memory_children([
        {**base, "criterion": ["--criterion", "cross_entropy"]},
        {**base, "criterion": ["--criterion", "maligan_mixed", "--num-samples", str(m),
                               "--prefix-init", "0", "--prefix-decay", "0"]},
    ])
    how = ("VmHWM after resetting it via /proc/self/clear_refs" if mixed["exact_peak"]
           else "getrusage ru_maxrss")
    report.line(f"  {gen.name}, B={b}, m={m}, T={t}, fresh subprocess each; RSS peak = {how}")

    def mib(kib: float) -> str:
        return f"{kib / 1024:7.1f} MiB"

    report.line(f"  CPU RSS before update: MLE {mib(mle['rss_before_kib'])} | maligan_mixed "
                f"{mib(mixed['rss_before_kib'])}")
    report.line(f"  CPU RSS peak added by one update: MLE {mib(mle['peak_delta_kib'])} | "
                f"maligan_mixed {mib(mixed['peak_delta_kib'])}")
    if mle["peak_delta_kib"] > 0 and mixed["peak_delta_kib"] > 0:
        report.ratio(f"memory.{gen.name}.rss_peak_over_mle", "maligan_mixed / MLE (RSS peak added)",
                     mixed["peak_delta_kib"] / mle["peak_delta_kib"], "(no target)", None)
    if "cuda_peak_delta_bytes" in mixed:
        report.line(f"  CUDA max_memory_allocated added by one update: MLE "
                    f"{mib(mle['cuda_peak_delta_bytes'] / 1024)} | maligan_mixed "
                    f"{mib(mixed['cuda_peak_delta_bytes'] / 1024)}")
        report.ratio(f"memory.{gen.name}.cuda_peak_over_mle",
                     "maligan_mixed / MLE (CUDA peak added)",
                     mixed["cuda_peak_delta_bytes"] / max(mle["cuda_peak_delta_bytes"], 1),
                     "(no target)", None)
    else:
        report.line("  CUDA max_memory_allocated: n/a (no CUDA device in this run)")


def large_section(data: dict, sizes: Sizes, report: Report, device: torch.device) -> None:
    b, m, t = sizes.large_batch, sizes.samples, sizes.length
    gen = Generator("transformer_lm_gpt", data, TRANSFORMER_124M, device)
    report.line(f"  transformer_lm_gpt, shared embeddings, V={len(gen.dictionary)}: "
                f"{gen.params / 1e6:.1f}M params; B={b}, m={m}, T={t}")
    sample = gen.batch(b, t)
    gen.model.eval()
    sampled = compare({
        "incremental": lambda: sample_fixed(gen.model, sample, 0, m, t),
        "naive": lambda: sample_naive(gen.model, sample, 0, m, t),
        "seqgen": sequence_generator_sampler(gen, b * m, t),
    }, sizes.trials, device, fewer={"naive": sizes.naive_trials})
    gen.model.train()
    mle = gen.criterion(["--criterion", "cross_entropy"])
    mixed = gen.criterion(["--criterion", "maligan_mixed", "--num-samples", str(m),
                           "--prefix-init", "0", "--prefix-decay", "0"], t)
    updates = compare({"mle": lambda: gen.update(mle, sample),
                       "mixed": lambda: gen.update(mixed, sample)}, sizes.trials, device)
    for name, seconds in sampled.items():
        report.line(f"  sampler {name:<12} {b * m * t / seconds:12,.0f} sampled tokens/s")
    for name, seconds in updates.items():
        report.line(f"  update  {name:<12} {b * t / seconds:12,.0f} target tokens/s "
                    f"({ms(seconds)})")
    report.ratio("large.naive_over_incremental", "sample_naive / incremental",
                 sampled["naive"] / sampled["incremental"], "target >= 10x",
                 sampled["naive"] / sampled["incremental"] >= 10)
    report.ratio("large.seqgen_over_incremental", "SequenceGenerator / incremental",
                 sampled["seqgen"] / sampled["incremental"], "target >= 2.5x",
                 sampled["seqgen"] / sampled["incremental"] >= 2.5)
    report.ratio("large.maligan_mixed_over_mle", f"maligan_mixed m={m} N=0 / MLE",
                 updates["mixed"] / updates["mle"], "target <= 6x",
                 updates["mixed"] / updates["mle"] <= 6)


def profile_section(gen: Generator, sizes: Sizes, device: torch.device, top: int) -> None:
    """torch.profiler (self time per op) and cProfile (cumulative) of single updates."""
    from torch.profiler import ProfilerActivity, profile

    cases = {
        "maligan_mixed": (["--criterion", "maligan_mixed", "--num-samples", str(sizes.samples),
                           "--prefix-init", "0", "--prefix-decay", "0"],
                          gen.batch(sizes.batch, sizes.length)),
        "seqgan": (["--criterion", "seqgan", "--rollouts", str(sizes.rollouts)],
                   gen.batch(sizes.rollout_rows, sizes.rollout_length)),
    }
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    for name, (options, sample) in cases.items():
        crit = gen.criterion(options, sample["target"].size(1))
        gen.update(crit, sample)  # warm-up
        with profile(activities=activities) as prof:
            gen.update(crit, sample)
        print(f"\n--- torch.profiler: one {name} update ({gen.name}), by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
        syncs = sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
        print(f"host syncs (aten::_local_scalar_dense: .item()/bool()/int()): {syncs}")
        profiler = cProfile.Profile()
        profiler.enable()
        gen.update(crit, sample)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
        print(f"\n--- cProfile: one {name} update ({gen.name}), cumulative")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip()))


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 trial (for tests)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--trials", type=int, default=None, help="timed rounds (median)")
    parser.add_argument("--large", action="store_true",
                        help="also tokens/s of a ~124M-parameter transformer_lm (for GPUs)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one maligan_mixed and one seqgan update")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--skip", default="", help="comma-separated sections to skip (1-5)")
    parser.add_argument("--json", default=None, help="write the ratios to this file")
    parser.add_argument("--workdir", default=None, help="keep the synthetic data here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    quiet_logging()
    if args.memory_child:
        quiet_logging()
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return

    sizes = Sizes.quick() if args.quick else Sizes()
    if args.trials:
        sizes.set_trials(args.trials)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    report = Report()
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir) if args.workdir else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="maligan_bench_")))
        data = prepare_data(workdir / "data", sizes.vocab, sizes.data_lengths(),
                            max(sizes.batch, sizes.memory_batch, sizes.sweep_batch))
        gens = [Generator(name, data, arch, device) for name, arch in sizes.archs.items()]
        card = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        report.line(f"fairseq-maligan bench: device={device}{card}"
                    f", torch {torch.__version__}, torch.set_num_threads({torch.get_num_threads()})"
                    f"{', --quick' if args.quick else ''}")
        report.line(f"timing: {sizes.trial_note()}; candidates interleaved round by round; "
                    "ratios, not absolute times, are the point (shared, noisy machine)")
        report.line(f"data: oracle text over V={sizes.vocab} symbols, fairseq-preprocess "
                    "--srcdict, batches from the task's dataset; naive sampler = "
                    f"{NAIVE_SAMPLER}; EOS banned in the project's "
                    "samplers (their banned= parameter), SequenceGenerator "
                    "min_len=max_len: every sample has exactly T tokens")
        report.line("models: " + ", ".join(
            f"{g.name} {g.params / 1e6:.2f}M params ({' '.join(g.arch[2:]) or 'defaults'})"
            for g in gens))
        main_gen = gens[0]
        sections: list[tuple[str, str, Callable[[], None]]] = [
            ("1", "", lambda: sampler_section(gens, sizes, report, device)),
            ("2", "[2] one training update (task.train_step: train mode, forward + backward) / "
                  "one MLE (cross_entropy) update of the same generator and batch",
             lambda: updates_and_rollouts(gens, sizes, report, device)),
            ("3", "[3] maligan_mixed update time vs T and vs m; power-law exponent by log-log "
                  "least squares", lambda: scaling_section(main_gen, sizes, report, device)),
            ("4", "[4] peak memory of one maligan_mixed update (vs one MLE update)",
             lambda: memory_section(main_gen, sizes, report, device, args.threads)),
            ("5", "[5] rollouts of several start steps per decoding batch, where one step "
                  "already makes a large batch",
             lambda: grouping_section(Generator("lstm_lm_h32", data, TINY_LSTM, device),
                                      sizes, report, device)),
        ]
        if args.large:
            sections.append(("large", "[6] large model throughput", lambda: large_section(
                prepare_data(workdir / "large", sizes.large_vocab, [sizes.length],
                             sizes.large_batch), sizes, report, device)))
        for key, title, run in sections:
            if key in skip:
                continue
            report.line()
            if title:
                report.line(title)
            section_start = time.perf_counter()
            run()
            report.line(f"  (section took {time.perf_counter() - section_start:.0f} s)")
        passed = sum(report.verdicts.values())
        report.line()
        report.line(f"summary: {passed}/{len(report.verdicts)} targets met; "
                    f"total wall time {time.perf_counter() - started:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "ratios": report.ratios, "exponents": report.exponents,
                "verdicts": report.verdicts,
            }, indent=1))
        if args.profile:
            profile_section(main_gen, sizes, device, args.profile_top)


if __name__ == "__main__":
    main()
