"""The driver of the paper experiments under ``examples/``: stock fairseq tools as stages.

One language-modelling experiment is: binarise ``raw/{train,valid,test}.txt`` with
``fairseq-preprocess``, pretrain the generator with MLE, then continue that checkpoint
for the same number of updates with each method:

- ``mle``: ``cross_entropy`` (the fair baseline);
- ``seqgan``: ``seqgan`` (REINFORCE, R rollouts by a delayed copy);
- ``maligan_basic``: ``maligan_mixed`` with N = 0 throughout (the paper's Algorithm 1);
- ``maligan_full``: ``maligan_mixed`` with N decreasing from ``prefix_init`` by K tokens
  every ``prefix_decay_updates`` (Algorithm 2: sequential, mixed MLE).

Every adversarial method uses the same discriminator (pretrained once on samples of the
MLE model when ``disc_pretrain_updates`` > 0, as both papers do), sampler and learning
rates. Every method makes the same number of generator updates; an adversarial run also
makes ``disc_steps`` - 1 discriminator-only updates before each of them (the papers' k)
and its warm-up updates, so its fairseq ``--max-update`` is larger. Each stage's command,
log and wall-clock time are recorded for ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

import fairseq_maligan
from fairseq_maligan.criterions import max_target_positions
from fairseq_maligan.evaluation import (
    beyond_baseline,
    detokenize,
    discriminator_score,
    evaluate_generator,
    format_table,
    load_generator,
    nll_test,
    past_baseline_range,
    plot_sweep,
    read_references,
    run_discriminator,
    sample_rows,
    temperature_sweep,
)
from fairseq_maligan.metrics import ReferenceBLEU

PLUGIN = Path(fairseq_maligan.__file__).resolve().parent
PROGRESS = re.compile(r"\| (train_inner|train|valid) \|")
T = TypeVar("T")
# fairseq-train collates batches in a daemon thread unless --data-buffer-size is 0. A run
# that stops mid-epoch (--max-update) then exits with that thread inside torch, and the
# process may abort ("terminate called without an active exception") after its checkpoint
# is saved. With --num-workers 0 the thread only shares the GIL: collating in the training
# loop costs next to nothing.
IN_LOOP_BATCHES = ["--num-workers", "0", "--data-buffer-size", "0"]
IN_PROCESS = threading.Lock()  # torch work in this process seeds the global RNG: one at a time
METHODS = {
    "mle": "MLE",
    "seqgan": "SeqGAN",
    "maligan_basic": "MaliGAN-basic",
    "maligan_full": "MaliGAN-full",
}
PRETRAINED = "MLE pretrained"  # the checkpoint every method continues, as a model's name


class Runner:
    """Runs fairseq console tools in fresh processes, keeps their logs and timings."""

    # Fine-tuning saves checkpoint_last.pt every this many updates (generator updates
    # where a driver counts D's steps apart), so an interrupted stage loses no more than
    # these. Not in any budget: it changes no result (fairseq reseeds every update).
    resume_interval_updates = 20

    def __init__(self, out: Path, threads: int = 1, jobs: int = 1) -> None:
        if jobs < 1:
            sys.exit(f"--jobs must be at least 1, not {jobs}")
        self.out = Path(out)
        self.jobs = jobs  # fine-tuning stages run at once (each a process of `threads`)
        self.env = {
            **os.environ,
            "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        self.stages: list[dict[str, Any]] = []

    def fairseq(self, stage: str, tool: str, args: Sequence[str], echo: bool = True) -> str:
        """Run ``python -m fairseq_cli.<tool>`` as a stage (see :meth:`command`)."""
        print(f"\n== {stage}: fairseq-{tool.replace('_', '-')}", flush=True)
        return self.command(stage, ["-m", f"fairseq_cli.{tool}", *map(str, args)], echo)

    def command(self, stage: str, args: Sequence[str], echo: bool = True) -> str:
        """Run ``python ARGS`` in a fresh process, keep its log, echo its progress lines;
        exit with the log's tail if it fails. Returns the output."""
        command = [sys.executable, *map(str, args)]
        log_path = self.out / "logs" / f"{stage}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        lines: list[str] = []
        with open(log_path, "w", buffering=1) as log:
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=self.env,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if echo and PROGRESS.search(line):
                    print(f"   {stage}: " + line.split(" | ", 3)[-1].strip()[:160],
                          flush=True)
            proc.wait()
        seconds = time.time() - started
        if proc.returncode != 0:
            sys.exit(f"{stage} failed (exit {proc.returncode}); see {log_path}:\n"
                     + "".join(lines[-25:]))
        print(f"   done in {seconds:.0f} s (log: {log_path})", flush=True)
        self.record(stage, command, seconds, log=str(log_path))
        return "".join(lines)

    def record(self, stage: str, command: Sequence[str] | str, seconds: float,
               **extra: Any) -> None:
        """Note one stage's command and wall-clock time for results.json."""
        text = command if isinstance(command, str) else shlex.join(command)
        self.stages.append({"stage": stage, "command": text, "seconds": round(seconds, 1),
                            **extra})

    def stage_record(self, stage: str) -> dict[str, Any]:
        """The latest record of ``stage`` (stages run in lanes finish in any order)."""
        return next(s for s in reversed(self.stages) if s["stage"] == stage)

    def audit_stage(self, stage: str, log: str, checkpoint: Path, data: Path,
                    max_tokens: int, seed: int) -> None:
        """Put an adversarial stage's format audit (from its ``log``) and its D's held-out
        audit (of ``checkpoint``) into the stage's record; the held-out audits run one at
        a time, as they seed torch's global RNG in this process."""
        with IN_PROCESS:
            held_out = held_out_audit(checkpoint, data, max_tokens, seed)
        self.stage_record(stage)["format_audit"] = {**format_audit(log), **held_out}

    def in_lanes(self, work: Callable[[str], T], methods: Sequence[str]) -> list[T]:
        """``work(method)`` for every method, ``jobs`` at once in the order given (the
        methods are independent once MLE and D are pretrained); results in that order. A
        failed method stops those not yet started; the running ones finish first."""
        if self.jobs == 1:
            return [work(method) for method in methods]
        failed = threading.Event()

        def lane(method: str) -> T | None:
            if failed.is_set():
                return None
            try:
                return work(method)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(lane, methods))

    def train_updates(self, stage: str, save_dir: Path, args: Sequence[str],
                      max_update: int) -> str:
        """fairseq-train ``args`` (saving to ``save_dir``) for ``max_update`` updates, or
        nothing if its ``checkpoint_last.pt`` already has them: fairseq-train resumed at
        ``--max-update`` makes one update more before it checks the limit. Returns the
        stage's log (that of the earlier run for a finished stage)."""
        last = save_dir / "checkpoint_last.pt"
        if last.exists() and checkpoint_updates(last) >= max_update:
            print(f"\n== {stage}: kept, {last} has its {max_update} updates", flush=True)
            log_path = self.out / "logs" / f"{stage}.log"
            self.record(stage, "kept from an earlier run", 0.0, kept=True, log=str(log_path))
            return log_path.read_text() if log_path.exists() else ""
        return self.fairseq(stage, "train", [*args, "--max-update", str(max_update)])

    def to_convergence(self, stage: str, save_dir: Path, args: Sequence[str],
                       floor_epochs: int, patience: int, max_epochs: int) -> dict[str, Any]:
        """fairseq-train ``args`` (saving to ``save_dir``) to convergence: ``floor_epochs``
        (the published budget: never less), then, with ``patience`` > 0, on until the valid
        loss has not improved for that many epochs (fairseq's ``--patience``) or
        ``max_epochs`` are done; not at all if the floor's best epoch is already that
        many epochs old. What it took is written to ``save_dir/pretraining.json`` (and
        to the stage's record), whose presence marks the stage finished for a rerun; an
        interrupted stage resumes from its ``checkpoint_last.pt``."""
        summary = save_dir / "pretraining.json"
        if summary.exists():
            return json.loads(summary.read_text())
        self.fairseq(stage, "train", [*args, "--max-epoch", str(floor_epochs)])
        if patience > 0 and not best_is_stale(save_dir, patience):
            self.fairseq(f"{stage}_to_convergence", "train", [
                *args, "--max-epoch", str(max_epochs), "--patience", str(patience),
            ])
        took = pretraining_summary(save_dir, floor_epochs, patience)
        write_results(summary, took)
        self.stages[-1]["pretraining"] = took  # into every results.json's stages
        return took

    def seconds(self, stage: str) -> float:
        """Wall-clock seconds of a recorded stage."""
        return self.stage_record(stage)["seconds"]


@dataclass(frozen=True)
class Budget:
    """The sizes of one mode of a language-modelling experiment."""

    mle_epochs: int  # MLE pretraining runs at least this (the field's published budget)
    mle_lr: float
    max_tokens: int
    updates: int  # generator updates of every method after pretraining
    lr: float  # learning rate of every method after pretraining
    finetune_max_tokens: int | None = None  # batch size after pretraining (default max_tokens)
    num_samples: int = 4  # m
    rollouts: int = 16  # R (SeqGAN)
    prefix_init: int = 10  # N0 of MaliGAN-full
    prefix_decay: int = 1  # K
    prefix_decay_updates: int = 10  # generator updates per schedule step
    disc_lr: float = 1e-3
    disc_warmup_updates: int = 0  # D-only updates before the first generator update
    disc_steps: int = 1  # k: D updates per generator update (k - 1 of them D-only)
    disc_pretrain_updates: int = 0  # > 0: pretrain D on the MLE model's samples first
    disc_pretrain_patience: int = 0  # > 0: stop D pretraining after this many valid scores
    # (every 250 updates) without a lower valid loss; the best D is kept either way
    disc_dim: int = 64
    save_interval_updates: int = 0  # > 0: keep a checkpoint every this many generator
    # updates (curves)
    mle_patience: int = 0  # > 0: then on until the valid loss has not improved for this
    mle_max_epochs: int = 0  # many epochs, or this many in all (0: 4 x mle_epochs)
    eval_samples: int = 1000
    temperatures: tuple[float, ...] = (0.7, 0.85, 1.0, 1.2)

    @classmethod
    def quick(cls, **sizes: Any) -> Budget:
        """A smoke-test budget: 2 MLE epochs, 6 updates per method, tiny evaluation."""
        tiny = dict(mle_epochs=2, mle_lr=0.01, max_tokens=1500, updates=6, lr=1e-3, rollouts=4,
                    disc_dim=16, disc_pretrain_updates=3, eval_samples=100,
                    temperatures=(0.8, 1.0))
        return cls(**{**tiny, **sizes})

    def fairseq_updates(self, method: str, generator_updates: int | None = None) -> int:
        """fairseq's update count of ``method`` after ``generator_updates`` generator
        updates (default: the budget's): the D-only warm-up and k - 1 D-only updates
        before each generator update come on top for an adversarial method."""
        updates = self.updates if generator_updates is None else generator_updates
        if method == "mle":
            return updates
        return self.disc_warmup_updates + self.disc_steps * updates

    def generator_updates(self, method: str, fairseq_updates: int) -> int:
        """The generator updates made by fairseq update ``fairseq_updates`` of ``method``
        (the inverse of ``fairseq_updates``)."""
        if method == "mle":
            return fairseq_updates
        return max(0, fairseq_updates - self.disc_warmup_updates) // self.disc_steps


# The discriminator budget of every full run. SeqGAN gives D 50 x 3 epochs of pretraining
# and 5 x 3 epochs per generator update (~4,700 minibatches on its oracle). Here: pretraining
# scored on the valid split every 250 minibatches, stopped after 4 scores without a lower
# valid loss, keeping the best D (on the oracle D memorises the 10,000 training rows: its
# valid loss is lowest near 1,000 minibatches, then rises; with 300, as before, it stayed at
# chance), then k = 5 minibatches per generator update, and no warm-up beyond pretraining.
FULL_DISCRIMINATOR = dict(disc_pretrain_updates=4000, disc_pretrain_patience=4, disc_steps=5,
                          disc_warmup_updates=0)


def discriminator_args(budget: Budget) -> list[str]:
    """The discriminator of every adversarial run (and of its pretraining script)."""
    return ["--disc-arch", "rnn_discriminator", "--disc-embed-dim", str(budget.disc_dim),
            "--disc-hidden-dim", str(budget.disc_dim)]


def method_args(method: str, budget: Budget, disc_path: Path | None = None,
                mle_criterion: str = "cross_entropy") -> list[str]:
    """Task, criterion and optimiser options of one method (``mle_criterion``: that of
    MLE, ``adaptive_loss`` for a model with an adaptive softmax, which stock fairseq
    builds only with ``--ddp-backend legacy_ddp``)."""
    if method == "mle":
        legacy = ["--ddp-backend", "legacy_ddp"] if mle_criterion == "adaptive_loss" else []
        return ["--task", "language_modeling", "--criterion", mle_criterion,
                "--optimizer", "adam", *legacy]
    adversarial = [
        "--task", "maligan_language_modeling", "--optimizer", "maligan_adam",
        *discriminator_args(budget), "--disc-lr", str(budget.disc_lr),
        "--disc-warmup-updates", str(budget.disc_warmup_updates),
        "--disc-steps", str(budget.disc_steps),
        *(["--disc-path", str(disc_path)] if disc_path else []),
    ]
    if method == "seqgan":
        return [*adversarial, "--criterion", "seqgan", "--rollouts", str(budget.rollouts)]
    maligan = [*adversarial, "--criterion", "maligan_mixed",
               "--num-samples", str(budget.num_samples)]
    if method == "maligan_basic":
        return [*maligan, "--prefix-init", "0", "--prefix-decay", "0"]
    if method == "maligan_full":
        return [*maligan, "--prefix-init", str(budget.prefix_init),
                "--prefix-decay", str(budget.prefix_decay),
                "--prefix-decay-updates", str(budget.prefix_decay_updates * budget.disc_steps)]
    raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")


class LMExperiment(Runner):
    """MLE pretraining, then every method for the same updates, on one binarised corpus."""

    def __init__(self, out: Path, generator: Sequence[str], budget: Budget, seed: int = 1,
                 threads: int = 1, tokens_per_sample: int = 64,
                 discriminator: Sequence[str] = (), mle_criterion: str = "cross_entropy",
                 pretrain_args: Sequence[str] = (), jobs: int = 1) -> None:
        super().__init__(out, threads, jobs)
        self.generator = list(generator)
        self.discriminator = list(discriminator)  # extra --disc-* options (layers, cell)
        self.mle_criterion = mle_criterion  # of pretraining and of the MLE baseline
        self.pretrain_args = list(pretrain_args)  # e.g. a learning-rate schedule
        self.disc_path: Path | None = None
        self.budget = budget
        self.seed = seed
        self.tokens_per_sample = tokens_per_sample
        self.data = self.out / "data-bin"

    def preprocess(self, raw: Path) -> None:
        """Binarise ``raw/{train,valid,test}.txt`` into ``data-bin`` (kept if complete)."""
        if (self.data / "test.idx").exists():
            return
        self.fairseq("preprocess", "preprocess", [
            "--only-source", "--trainpref", raw / "train.txt", "--validpref", raw / "valid.txt",
            "--testpref", raw / "test.txt", "--destdir", self.data, "--workers", "1",
        ], echo=False)

    def common_args(self, save_dir: Path, max_tokens: int) -> list[str]:
        """Generator, data and logging options shared by every training stage."""
        return [
            self.data, "--user-dir", PLUGIN, *self.generator, "--sample-break-mode", "eos",
            "--tokens-per-sample", str(self.tokens_per_sample),
            "--max-tokens", str(max_tokens), "--cpu", "--seed", str(self.seed),
            "--log-format", "simple", "--log-interval", "10", "--no-epoch-checkpoints",
            *IN_LOOP_BATCHES, "--save-dir", save_dir,
        ]

    def pretrain(self) -> Path:
        """MLE pretraining (``mle_criterion``) to convergence (:meth:`Runner.to_convergence`
        with the budget's ``mle_epochs``, ``mle_patience`` and ``mle_max_epochs``) in
        ``pretrained/``; returns its best checkpoint."""
        save_dir = self.out / "pretrained"
        budget = self.budget
        args = [*self.common_args(save_dir, budget.max_tokens),
                *method_args("mle", budget, mle_criterion=self.mle_criterion),
                "--lr", str(budget.mle_lr), *self.pretrain_args]
        self.to_convergence("pretrain_mle", save_dir, args, budget.mle_epochs,
                            budget.mle_patience, budget.mle_max_epochs or 4 * budget.mle_epochs)
        return save_dir / "checkpoint_best.pt"

    def pretraining(self) -> dict[str, Any]:
        """What MLE pretraining took (``pretrained/pretraining.json``)."""
        return json.loads((self.out / "pretrained" / "pretraining.json").read_text())

    def pretrain_discriminator(self, pretrained: Path) -> Path:
        """The discriminator every adversarial method starts from: trained on real rows
        against samples of the MLE model (``scripts/pretrain_discriminator.py``)."""
        path = self.out / "discriminator.pt"
        if path.exists():
            return path
        budget = self.budget
        print("\n== pretrain_discriminator: scripts/pretrain_discriminator.py", flush=True)
        text = self.command("pretrain_discriminator", [
            PLUGIN.parent / "scripts" / "pretrain_discriminator.py", self.data,
            "--generator", pretrained, "--output", path, *discriminator_args(budget),
            *self.discriminator, "--updates", str(budget.disc_pretrain_updates),
            "--patience", str(budget.disc_pretrain_patience),
            "--lr", str(budget.disc_lr),
            "--max-tokens", str(budget.finetune_max_tokens or budget.max_tokens),
            "--seed", str(self.seed),
        ])
        found = re.search(r"valid accuracy \(real and generated rows\) ([\d.]+)", text)
        if found:
            self.stages[-1]["valid_accuracy"] = float(found.group(1))
        return path

    def finetune(self, method: str, pretrained: Path) -> Path:
        """Continue ``pretrained`` for the budget's updates with ``method``; its save dir."""
        save_dir = self.out / method
        budget = self.budget
        curves = budget.save_interval_updates > 0
        interval = budget.fairseq_updates(method, budget.save_interval_updates if curves
                                          else self.resume_interval_updates) \
            - budget.fairseq_updates(method, 0)
        keep = ["--save-interval-updates", str(interval),
                "--keep-interval-updates", "-1" if curves else "1"]
        max_tokens = budget.finetune_max_tokens or budget.max_tokens
        log = self.train_updates(method, save_dir, [
            *self.common_args(save_dir, max_tokens),
            *method_args(method, budget, self.disc_path, self.mle_criterion),
            *(self.discriminator if method != "mle" else []),
            "--lr", str(budget.lr), "--finetune-from-model", pretrained, *keep,
        ], budget.fairseq_updates(method))
        if method != "mle":
            self.audit_stage(method, log, save_dir / "checkpoint_last.pt", self.data,
                             max_tokens, self.seed)
        return save_dir

    def run_all(self, raw: Path, methods: Sequence[str] = tuple(METHODS)) -> dict[str, Path]:
        """Preprocess, pretrain, fine-tune every method: name -> final checkpoint.

        The result starts with ``pretrained`` (the MLE starting point of every method).
        A rerun resumes: finished data and discriminator are kept, and fairseq-train
        continues each stage from its ``checkpoint_last.pt``.
        """
        self.preprocess(raw)
        pretrained = self.pretrain()
        if self.budget.disc_pretrain_updates > 0:
            self.disc_path = self.pretrain_discriminator(pretrained)
        save_dirs = self.in_lanes(lambda method: self.finetune(method, pretrained), methods)
        return {"pretrained": pretrained, **{method: save_dir / "checkpoint_last.pt"
                                             for method, save_dir in zip(methods, save_dirs)}}

    def eval_lm(self, checkpoint: Path, split: str, stage: str) -> dict[str, float]:
        """Stock ``fairseq-eval-lm`` (no ``--user-dir``) on a split, sentence by sentence.

        Returns its base-2 loss and perplexity, and ``nll`` in nats per token (EOS counted).
        """
        text = self.fairseq(stage, "eval_lm", [
            self.data, "--path", checkpoint, "--gen-subset", split, "--cpu",
            "--sample-break-mode", "eos", "--tokens-per-sample", str(self.tokens_per_sample),
            "--max-tokens", "8000", "--num-workers", "0",
        ], echo=False)
        found = re.search(r"Loss \(base 2\): ([\d.]+), Perplexity: ([\d.]+)", text)
        if found is None:
            sys.exit(f"{stage}: no perplexity in fairseq-eval-lm's output")
        loss2, perplexity = float(found.group(1)), float(found.group(2))
        return {"loss_base2": loss2, "perplexity": perplexity, "nll": loss2 * math.log(2)}


def held_out_audit(checkpoint: Path, data: Path, max_tokens: int, seed: int
                   ) -> dict[str, float]:
    """The loss and accuracy of the D that an adversarial run ended with, on held-out
    rows: the valid split against samples of the final generator (the training log's
    accuracy is on training rows, which D may have memorised)."""
    generator, task = load_generator(str(checkpoint), str(data))
    disc, sample_max_len = run_discriminator(str(checkpoint), generator, task)
    loss, accuracy = discriminator_score(disc, generator, task, "valid", max_tokens, seed,
                                         sample_max_len or max_target_positions(task))
    return {"disc/valid_loss": round(loss, 4), "disc/valid_acc": round(accuracy, 4)}


AUDIT_KEYS = ("disc/acc_real", "disc/acc_fake", "sample/eos_real", "sample/eos_fake",
              "sample/len_real", "sample/len_fake")
"""The format audit of an adversarial run: did D judge content, not format?"""


def format_audit(log: str) -> dict[str, float]:
    """The audit keys from the last ``train`` summary line of a fairseq-train log: the
    share of real and sampled rows that end in EOS, their mean lengths, D's accuracy."""
    lines = [line for line in log.splitlines() if "| train |" in line]
    if not lines:
        return {}
    fields = dict(re.findall(r"([\w/]+) ([-\d.]+)(?= \||$)", lines[-1]))
    return {key: float(fields[key]) for key in AUDIT_KEYS if key in fields}


def paired_differences(values: Mapping[Any, Mapping[str, float]], baseline: str = "mle"
                       ) -> dict[str, dict[str, Any]]:
    """Per method, the per-seed difference method - baseline (both continued from the
    same pretrained checkpoint), their mean and standard deviation, and how many seeds
    fall below and above zero. ``values``: seed -> method -> value; undefined (nan)
    values are left out of that seed."""
    methods = {m for per_method in values.values() for m in per_method if m != baseline}
    result = {}
    for method in sorted(methods):
        differences = [per_method[method] - per_method[baseline]
                       for per_method in values.values()
                       if not math.isnan(per_method.get(method, math.nan))
                       and not math.isnan(per_method.get(baseline, math.nan))]
        result[method] = {
            "differences": differences,
            "mean": statistics.fmean(differences) if differences else math.nan,
            "std": statistics.stdev(differences) if len(differences) > 1 else 0.0,
            "below": sum(d < 0 for d in differences),
            "above": sum(d > 0 for d in differences),
        }
    return result


def mean_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value) over the seeds where the
    value is defined (NLL-oracle is not when no sample has the oracle's length); ``n``
    counts them."""
    defined = [value for value in values if not math.isnan(value)]
    if not defined:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": statistics.fmean(defined),
            "std": statistics.stdev(defined) if len(defined) > 1 else 0.0, "n": len(defined)}


def seed_summary(per_seed: Mapping[Any, Mapping[str, Mapping[str, float]]],
                 keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The tables of a multi-seed experiment from ``per_seed`` (seed -> model -> metric ->
    value): per model and metric the :func:`mean_spread` over seeds (``mean``), and per
    metric the :func:`paired_differences` from MLE (``paired_minus_mle``)."""
    models = list(next(iter(per_seed.values())))
    return {
        "mean": {model: {key: mean_spread([per_seed[s][model][key] for s in per_seed])
                         for key in keys} for model in models},
        "paired_minus_mle": {key: paired_differences(
            {s: {m: per_seed[s][m][key] for m in models} for s in per_seed}) for key in keys},
    }


def over_seeds(out: Path, seeds: Sequence[int], budget: Budget,
               run_seed: Callable[[Path, int], dict[str, Any]],
               keys: Sequence[str]) -> dict[str, Any]:
    """Each seed's experiment in ``out/seed<N>``, run once and read back after
    (:func:`cached_result`, so seeds can run in parallel), and the tables over them.

    ``run_seed(directory, seed)`` runs one seed and returns ``scores`` (model -> metric
    -> value), its temperature ``sweep`` and its ``stages``; the seconds it took are
    stored beside them. Returned: the :func:`seed_summary` of ``keys``, every seed's MLE
    pretraining, format audits, the sweep points beyond every temperature of MLE (and of
    ``MLE pretrained`` where every seed's sweep has it), scores, sweeps, stages and seconds.
    """
    def timed(seed: int) -> dict[str, Any]:
        started = time.time()
        result = run_seed(out / f"seed{seed}", seed)
        return {**result, "seconds": round(time.time() - started, 1)}

    per_seed = {seed: cached_result(out / f"seed{seed}" / "results.json", budget,
                                    lambda seed=seed: timed(seed))
                for seed in seeds}
    return {
        "seeds": list(seeds),
        **seed_summary({seed: result["scores"] for seed, result in per_seed.items()}, keys),
        "pretraining": seed_pretraining(out, seeds),
        "format_audit": audit_rows([{"seed": seed, **stage} for seed, result in per_seed.items()
                                    for stage in result["stages"]]),
        "beyond_mle_temperatures": {seed: beyond_baseline(result["sweep"], METHODS["mle"])
                                    for seed, result in per_seed.items()},
        "past_mle_range": {seed: past_baseline_range(result["sweep"], METHODS["mle"])
                           for seed, result in per_seed.items()},
        **({"beyond_pretrained_temperatures": {
            seed: beyond_baseline(result["sweep"], PRETRAINED) for seed, result in per_seed.items()
        }, "past_pretrained_range": {
            seed: past_baseline_range(result["sweep"], PRETRAINED)
            for seed, result in per_seed.items()
        }} if all(any(r["name"] == PRETRAINED for r in result["sweep"])
                  for result in per_seed.values()) else {}),
        "scores": {seed: result["scores"] for seed, result in per_seed.items()},
        "sweeps": {seed: result["sweep"] for seed, result in per_seed.items()},
        "stages": [{"seed": seed, **stage} for seed, result in per_seed.items()
                   for stage in result["stages"]],
        "seed_seconds": {seed: result["seconds"] for seed, result in per_seed.items()},
    }


def seed_pretraining(out: Path, seeds: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Seed -> what its MLE pretraining took (``out/seed<N>/pretrained/pretraining.json``)."""
    return {seed: json.loads((out / f"seed{seed}" / "pretrained" / "pretraining.json")
                             .read_text()) for seed in seeds}


def audit_rows(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row (seed, method, audit values) per stage (with its ``seed``) that has a
    format audit."""
    return [{"seed": stage["seed"], "method": stage["stage"], **stage["format_audit"]}
            for stage in stages if "format_audit" in stage]


def print_over_seeds(title: str, results: Mapping[str, Any], keys: Sequence[str],
                     published: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """The tables of :func:`over_seeds`: mean +- std per model (and the published
    figures), MLE pretraining, the differences from MLE per seed with their signs, the
    format audit and the temperature sweeps' answer."""
    names = {"pretrained": PRETRAINED, **METHODS}

    def cell(value: Mapping[str, float]) -> str:
        return "-" if value["n"] == 0 else f"{value['mean']:.4f} +- {value['std']:.4f}"

    records = [{"model": names[model], **{key: cell(row[key]) for key in keys}}
               for model, row in results["mean"].items()]
    records += [{"model": f"published: {name}", **{key: row.get(key) for key in keys}}
                for name, row in (published or {}).items()]
    print(f"\n{title}; mean +- std over seeds {results['seeds']}\n{format_table(records)}")
    for seed, took in results["pretraining"].items():
        print(f"seed {seed} MLE pretraining: {took['epochs']} epochs ({took['updates']} "
              f"updates); best valid at epoch {took['best_epoch']}")
    print_comparisons(results)


def print_comparisons(results: Mapping[str, Any]) -> None:
    """The differences from MLE per seed with their signs (``paired_minus_mle``), the
    ``format_audit`` and the sweeps' answer (``beyond_mle_temperatures`` and, of those,
    ``past_mle_range``, seed -> model -> temperatures), as :func:`over_seeds` returns
    them."""
    print("\nminus MLE on the same pretrained checkpoint, mean (seeds below / above 0):")
    for method in METHODS:
        if method != "mle" and method in next(iter(results["paired_minus_mle"].values())):
            print(f"{METHODS[method]:<14}" + "  ".join(
                f"{key} {paired[method]['mean']:+.4f} ({paired[method]['below']}/"
                f"{paired[method]['above']})"
                for key, paired in results["paired_minus_mle"].items()))
    print("\nformat audit at the end (EOS share real/fake, mean length real/fake, D acc):")
    for row in results["format_audit"]:
        print(f"seed {row['seed']} {METHODS[row['method']]:<14}" + " ".join(
            f"{key.split('/')[-1]} {value:g}" for key, value in row.items()
            if key not in ("seed", "method")))
    for key, baseline in (("mle", METHODS["mle"]), ("pretrained", PRETRAINED)):
        for seed, found in results.get(f"beyond_{key}_temperatures", {}).items():
            for label, temperatures in found.items():
                past = results[f"past_{key}_range"][seed][label]
                inside = [t for t in temperatures if t not in past]
                answer = f"yes, at T = {inside}" if inside else "no"
                if past:
                    answer += f" (past {baseline}'s swept diversity, not counted: T = {past})"
                print(f"seed {seed}: {label} beyond every temperature of {baseline}: {answer}")


def completed_epochs(state: Mapping[str, Any]) -> int:
    """The epochs a fairseq checkpoint had finished: its iterator state names the epoch
    to run next once an epoch is over (``iterations_in_epoch`` 0)."""
    iterator = state["extra_state"]["train_iterator"]
    return int(iterator["epoch"]) - (iterator.get("iterations_in_epoch", 0) == 0)


def checkpoint_state(path: Path) -> dict[str, Any]:
    """A fairseq checkpoint's contents (safe loading, on the CPU)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def pretraining_summary(save_dir: Path, floor_epochs: int, patience: int) -> dict[str, Any]:
    """Epochs and updates that MLE pretraining in ``save_dir`` took, and its best's."""
    last = checkpoint_state(save_dir / "checkpoint_last.pt")
    best = checkpoint_state(save_dir / "checkpoint_best.pt")
    return {
        "epochs": completed_epochs(last),
        "updates": int(last["optimizer_history"][-1]["num_updates"]),
        "best_epoch": completed_epochs(best),
        "best_updates": int(best["optimizer_history"][-1]["num_updates"]),
        "best_valid_loss": float(best["extra_state"]["val_loss"]),
        "floor_epochs": floor_epochs, "patience": patience,
    }


def best_is_stale(save_dir: Path, patience: int) -> bool:
    """Whether ``checkpoint_best.pt`` is ``patience`` or more epochs older than
    ``checkpoint_last.pt``: the valid loss has already stopped improving."""
    def epoch(name: str) -> int:
        return completed_epochs(checkpoint_state(save_dir / name))

    return epoch("checkpoint_last.pt") - epoch("checkpoint_best.pt") >= patience


def checkpoint_updates(path: Path) -> int:
    """The number of updates a fairseq checkpoint was saved at (safe loading)."""
    return int(checkpoint_state(path)["optimizer_history"][-1]["num_updates"])


def interval_checkpoints(save_dir: Path) -> list[tuple[int, Path]]:
    """``(updates, path)`` of the ``checkpoint_E_U.pt`` files of a run, by update."""
    found = [(int(m.group(1)), path) for path in Path(save_dir).glob("checkpoint_*_*.pt")
             if (m := re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", path.name))]
    return sorted(found)


def write_results(path: Path, payload: dict[str, Any]) -> None:
    """Write results JSON (dataclasses become dicts)."""
    def default(value: Any) -> Any:
        if hasattr(value, "__dataclass_fields__"):
            return asdict(value)
        return str(value)

    Path(path).write_text(json.dumps(payload, indent=2, default=default) + "\n")


def cached_result(path: Path, budget: Budget, compute: Callable[[], dict[str, Any]]
                  ) -> dict[str, Any]:
    """``compute()``, stored at ``path`` with the budget that made it and read back by a
    later call, so that parts of an experiment (seeds, corpora) can run in parallel and
    a final run aggregates them; a file made with another budget is an error."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_results(path, {"budget": budget, **compute()})
    stored = json.loads(path.read_text())
    if stored["budget"] != json.loads(json.dumps(asdict(budget))):
        sys.exit(f"{path} was made with another budget; remove it to run again")
    return stored


def parse_mode(description: str, here: Path, quick: Budget, full: Budget,
               seeds: bool = False, **extra: dict[str, Any]) -> argparse.Namespace:
    """``--quick``, ``--out`` (default ``<here>/output/<mode>``), ``--threads``, with
    ``seeds`` ``--seeds`` (default 1 2 3, quick 1), and ``extra`` (option name ->
    ``add_argument`` keywords); sets ``args.mode`` and ``args.budget``, and silences
    fairseq's INFO logging in this process."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a tiny run of a minute or two")
    parser.add_argument("--out", type=Path, help="output directory (default: output/<mode>)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/MKL threads of each fairseq process")
    parser.add_argument("--jobs", type=int, default=1,
                        help="fine-tuning methods to train at once, each a fairseq process "
                             "of --threads threads (default 1)")
    if seeds:
        parser.add_argument(
            "--seeds", type=int, nargs="+",
            help="training and sampling seeds, each in <out>/seed<N> (default 1 2 3; quick: "
                 "1); a seed whose results exist is not run again, so seeds can run in "
                 "parallel and a final run with all of them aggregates")
    for name, options in extra.items():
        parser.add_argument(name, **options)
    args = parser.parse_args()
    args.mode = "quick" if args.quick else "full"
    args.budget = quick if args.quick else full
    if seeds:
        args.seeds = tuple(args.seeds or ((1,) if args.quick else (1, 2, 3)))
    logging.disable(logging.INFO)
    args.out = (args.out or here / "output" / args.mode).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """One sentence per line (the raw text that ``preprocess`` binarises)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def score_text(experiment: LMExperiment, checkpoints: dict[str, Path], references: Path,
               orders: Sequence[int], max_len: int, splits: Sequence[str] = ("test",),
               stock_eval: bool = False, tokenize: str = "nltk",
               self_bleu_samples: int | None = None) -> dict[str, dict[str, Any]]:
    """Perplexity, BLEU-n against ``references`` and self-BLEU-n of every checkpoint.

    Perplexities (base e, per token, EOS counted) come from stock ``fairseq-eval-lm`` when
    ``stock_eval``, otherwise in-process (the same figure; ``evaluation.nll_test``). BLEU
    scores ``budget.eval_samples`` samples at temperature 1, self-BLEU the first
    ``self_bleu_samples`` of them (default: all); five samples are kept for the README.
    ``tokenize`` is the BLEU tokenization ("nltk", the text-GAN
    papers'; "none" for text that is already tokenised, such as PTB with its ``<unk>``).
    """
    bleus = {n: ReferenceBLEU(read_references(str(references)), n, tokenize=tokenize)
             for n in orders}
    results = {}
    for name, path in checkpoints.items():
        model, task = load_generator(str(path), str(experiment.data))
        row: dict[str, Any] = {}
        for split in splits:
            if stock_eval:
                row[f"{split}_ppl"] = experiment.eval_lm(path, split, f"eval_{name}_{split}")[
                    "perplexity"]
            else:
                row[f"{split}_ppl"] = math.exp(nll_test(model, task, split))
        row.update(evaluate_generator(
            model, task, num_samples=experiment.budget.eval_samples, max_len=max_len,
            seed=experiment.seed, split=None, bleus=bleus, self_bleu_samples=self_bleu_samples,
        ))
        rows = sample_rows(model, 5, max_len, seed=experiment.seed + 1)
        row["examples"] = detokenize(rows, task.target_dictionary)
        results[name] = row
    return results


def sweep_text(experiment: LMExperiment, checkpoints: dict[str, Path], references: Path,
               order: int, max_len: int, tokenize: str = "nltk",
               self_bleu_samples: int | None = None,
               with_pretrained: bool = False) -> list[dict[str, Any]]:
    """Temperature sweep (BLEU-``order`` vs self-BLEU-``order``) of the four methods,
    drawn to ``sweep.png`` in the experiment's directory. ``with_pretrained`` adds the
    checkpoint they continue as a second baseline: continued MLE may move off its best."""
    names = {**({"pretrained": PRETRAINED} if with_pretrained else {}), **METHODS}
    records = temperature_sweep(
        {names[m]: str(checkpoints[m]) for m in names if m in checkpoints},
        experiment.budget.temperatures, experiment.budget.eval_samples,
        references=str(references), data=str(experiment.data), max_order=order,
        max_len=max_len, seed=experiment.seed, tokenize=tokenize,
        self_bleu_samples=self_bleu_samples,
    )
    plot_sweep(records, str(experiment.out / "sweep.png"),
               f"BLEU-{order} (higher: better quality)",
               f"self-BLEU-{order} (lower: more diverse)")
    return records


def print_results(title: str, results: dict[str, dict[str, Any]], keys: Sequence[str],
                  published: dict[str, dict[str, float]] | None = None) -> None:
    """One row per model (and one per published figure), the chosen metric columns."""
    names = {"pretrained": PRETRAINED, **METHODS}
    records = [{"model": names.get(n, n), **{k: r.get(k) for k in keys}}
               for n, r in results.items()]
    records += [{"model": f"published: {n}", **{k: r.get(k) for k in keys}}
                for n, r in (published or {}).items()]
    print(f"\n{title}\n{format_table(records)}")
