"""Audit how much of ``maligan_mixed``'s adversarial signal is about format, not content.

Real rows always end in EOS. If sampled rows are cut short (the old default limit of
sampled rows was the batch's longest target, and fairseq batches rows of similar length
together), many samples end without EOS, the discriminator can tell them apart by that
alone, and the generator is pushed towards shorter output. This script measures that:

1. prepares the data once per work folder (cached): the synthetic oracle of
   ``scripts/demo.py`` (vocabulary 500, length 20) or the Penn Treebank without the
   sentences longer than 35 words (as in the MaliGAN paper), binarised by
   ``fairseq-preprocess --only-source``;
2. pretrains a small stock ``lstm_lm`` with MLE once per work folder (cached);
3. fine-tunes it with ``maligan_mixed`` (MaliGAN-basic: N = 0, m = 4) through
   ``fairseq-train`` with the plugin given by ``--user-dir``;
4. reports, from the JSON training log, the discriminator's accuracy on real and on
   sampled rows and the sample lengths (every logged key that starts with ``disc`` or
   ``sample``, whatever the plugin version calls them) at the end of the discriminator
   warm-up, for the first interval after it and for the last interval; the mean length
   of the real training rows; and, in-process, for the MLE and the fine-tuned generator,
   how often a free sample (prefix 0, m 1, a large length limit) drawn for a training
   batch, batched as fairseq batches it, is longer than that batch's target width, i.e.
   how often the old default would have cut it (and so dropped its EOS).

    python scripts/signal_audit.py --dataset oracle --workdir /tmp/audit/oracle \
        --user-dir fairseq_maligan --tag after --output-json /tmp/audit/oracle/after.json

The plugin folder's parent goes first on ``PYTHONPATH`` (here and in every fairseq run),
so that this plugin, not an installed one, is imported; the JSON records which file was.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PTB_DIR = os.path.join(os.path.dirname(ROOT), "shared", "data", "ptb")
PTB_MAX_WORDS = 35
WARMUP_UPDATES = 50
LOG_INTERVAL = 10
MAX_TOKENS = 2048
SEED = 1
LOG_LINE = re.compile(r"\| (train_inner|train|valid) \| (\{.*\})\s*$")

DATASETS: dict[str, dict[str, Any]] = {
    # dim: lstm_lm embedding and hidden size; mle: budget of the MLE pretraining.
    "oracle": dict(dim=32, tokens_per_sample=32, mle=["--max-epoch", "25"]),
    "ptb": dict(dim=64, tokens_per_sample=64, mle=["--max-update", "1100"]),
}


def plugin_env(user_dir: str) -> dict[str, str]:
    """The environment of every fairseq run: the plugin's parent first on PYTHONPATH."""
    env = dict(os.environ)
    others = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(user_dir), *others])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", env["OMP_NUM_THREADS"])
    env["PYTHONWARNINGS"] = "ignore"
    return env


def import_plugin(user_dir: str) -> Any:
    """Import the plugin from ``user_dir`` (not from wherever else it is installed)."""
    parent, name = os.path.split(user_dir)
    sys.path.insert(0, parent)
    plugin = importlib.import_module(name)
    if os.path.dirname(os.path.abspath(plugin.__file__)) != user_dir:
        sys.exit(f"signal_audit: imported {plugin.__file__}, not the plugin in {user_dir}")
    return plugin


def subprocess_plugin_file(user_dir: str, cwd: str) -> str:
    """Which plugin file a fairseq run with this environment and folder imports."""
    name = os.path.basename(user_dir)
    out = subprocess.run(
        [sys.executable, "-c", f"import {name}; print({name}.__file__)"],
        env=plugin_env(user_dir), cwd=cwd, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def git_state(path: str) -> dict[str, Any] | None:
    """The commit of the repository holding ``path`` and whether the plugin is modified."""
    try:
        commit = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "plugin_modified": bool(dirty)}


def run_logged(title: str, args: list[str], log_path: str, env: dict[str, str],
               echo: str | None = None) -> float:
    """Run a command, its output into ``log_path``; echo lines matching ``echo``. Wall s.

    It runs in the log's folder (the work folder): in a repository root, ``python -m``
    would import that repository's plugin from the current folder.
    """
    print(f"== {title}", flush=True)
    started = time.time()
    tail: list[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=os.path.dirname(log_path))
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-30:]
            if echo and re.search(echo, line):
                print("   " + line.split(" | ", 3)[-1].strip()[:160], flush=True)
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"{title} failed; see {log_path}:\n{''.join(tail)}")
    wall = time.time() - started
    print(f"   done in {wall:.0f} s (log: {log_path})", flush=True)
    return wall


def fairseq(tool: str) -> list[str]:
    return [sys.executable, "-m", f"fairseq_cli.{tool}"]


def write_json(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as out:
        json.dump(value, out, indent=2)
        out.write("\n")


def read_json(path: str) -> Any:
    with open(path) as source:
        return json.load(source)


# -- stage 1: data --------------------------------------------------------------------


def filter_ptb(source_dir: str, raw: str) -> dict[str, dict[str, int]]:
    """PTB lines of at most 35 words into ``raw/{split}.txt``; counts per split."""
    counts = {}
    for split in ("train", "valid", "test"):
        kept = total = 0
        with open(os.path.join(source_dir, f"ptb.{split}.txt")) as lines, \
                open(os.path.join(raw, f"{split}.txt"), "w") as out:
            for line in lines:
                words = line.split()
                total += 1
                if 0 < len(words) <= PTB_MAX_WORDS:
                    out.write(" ".join(words) + "\n")
                    kept += 1
        counts[split] = {"lines": total, "kept": kept}
    return counts


def prepare_data(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Raw text and binarised data in the work folder, made once."""
    raw, data = os.path.join(args.workdir, "raw"), os.path.join(args.workdir, "data-bin")
    marker = os.path.join(data, "prepared.json")
    if os.path.isfile(marker):
        return {**read_json(marker), "cached": True}
    started = time.time()
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(raw)
    info: dict[str, Any] = {}
    if args.dataset == "oracle":
        command = [sys.executable, os.path.join(ROOT, "scripts", "make_oracle_data.py"),
                   "--out", raw, "--vocab-size", "500", "--seq-len", "20", "--train", "5000",
                   "--valid", "500", "--test", "500", "--seed", str(SEED)]
        run_logged("synthetic oracle (vocabulary 500, length 20)", command,
                   os.path.join(args.workdir, "oracle.log"), env)
        info["oracle_command"] = command
    else:
        info["source"] = args.ptb_dir
        info["filter"] = f"at most {PTB_MAX_WORDS} words"
        info["counts"] = filter_ptb(args.ptb_dir, raw)
        print(f"== PTB, lines of at most {PTB_MAX_WORDS} words: {info['counts']}", flush=True)
    command = [*fairseq("preprocess"), "--only-source", "--trainpref", f"{raw}/train.txt",
               "--validpref", f"{raw}/valid.txt", "--testpref", f"{raw}/test.txt",
               "--destdir", data, "--workers", "1"]
    run_logged("fairseq-preprocess", command, os.path.join(args.workdir, "preprocess.log"), env)
    info.update(preprocess_command=command, wall_s=round(time.time() - started, 1))
    write_json(marker, info)
    return {**info, "cached": False}


# -- stage 2: MLE pretraining ---------------------------------------------------------


def generator_args(args: argparse.Namespace) -> list[str]:
    """The generator (a stock lstm_lm) and data options shared by both fairseq runs."""
    spec = DATASETS[args.dataset]
    dim = str(spec["dim"])
    return [
        "--user-dir", args.user_dir, "--arch", "lstm_lm", "--decoder-embed-dim", dim,
        "--decoder-hidden-size", dim, "--decoder-out-embed-dim", dim,
        "--sample-break-mode", "eos", "--tokens-per-sample", str(spec["tokens_per_sample"]),
        "--max-tokens", str(MAX_TOKENS), "--cpu", "--seed", str(SEED), "--num-workers", "0",
        "--data-buffer-size", "0", "--no-epoch-checkpoints", "--log-format", "json",
    ]


def pretrain(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """A stock lstm_lm trained with cross-entropy, made once per work folder."""
    save_dir = os.path.join(args.workdir, "mle")
    marker = os.path.join(save_dir, "pretrain.json")
    if os.path.isfile(marker):
        return {**read_json(marker), "cached": True}
    shutil.rmtree(save_dir, ignore_errors=True)
    os.makedirs(save_dir)
    budget = args.mle_budget.split() if args.mle_budget else DATASETS[args.dataset]["mle"]
    command = [
        *fairseq("train"), os.path.join(args.workdir, "data-bin"), "--task", "language_modeling",
        *generator_args(args), "--criterion", "cross_entropy", "--optimizer", "adam",
        "--lr", "0.01", *budget, "--log-interval", "100", "--save-dir", save_dir,
    ]
    wall = run_logged("MLE pretraining (lstm_lm, cross_entropy)", command,
                      os.path.join(args.workdir, "mle.log"), env, echo=r"\| (train|valid) \|")
    valid = [r for tag, r in parse_log(os.path.join(args.workdir, "mle.log")) if tag == "valid"]
    info = {"command": command, "wall_s": round(wall, 1),
            "last_valid": valid[-1] if valid else None}
    write_json(marker, info)
    return {**info, "cached": False}


# -- stage 3: adversarial fine-tuning -------------------------------------------------


def finetune(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """maligan_mixed fine-tuning from the MLE checkpoint, in ``WORKDIR/TAG``."""
    save_dir = os.path.join(args.workdir, args.tag)
    log_path = os.path.join(args.workdir, f"{args.tag}.log")
    marker = os.path.join(save_dir, "finetune.json")
    if args.reuse_finetune and os.path.isfile(marker):
        return {**read_json(marker), "cached": True}
    shutil.rmtree(save_dir, ignore_errors=True)
    os.makedirs(save_dir)
    oracle = []
    if args.dataset == "oracle":
        oracle = ["--oracle-path", os.path.join(args.workdir, "raw", "oracle.pt")]
    command = [
        *fairseq("train"), os.path.join(args.workdir, "data-bin"),
        "--task", "maligan_language_modeling", *oracle, *generator_args(args),
        "--finetune-from-model", os.path.join(args.workdir, "mle", "checkpoint_best.pt"),
        "--criterion", "maligan_mixed", "--num-samples", "4", "--prefix-init", "0",
        "--prefix-decay", "0", "--disc-arch", args.disc_arch,
        "--disc-warmup-updates", str(WARMUP_UPDATES), "--optimizer", "maligan_adam",
        "--lr", "1e-4", "--disc-lr", "1e-3", "--max-update", str(args.updates),
        "--log-interval", str(LOG_INTERVAL), "--save-dir", save_dir,
    ]
    wall = run_logged(f"maligan_mixed fine-tuning ({args.tag}, {args.updates} updates)", command,
                      log_path, env, echo=r"\| (train_inner|valid) \|")
    info = {"command": command, "wall_s": round(wall, 1), "log": log_path}
    write_json(marker, info)
    return {**info, "cached": False}


# -- the training log -----------------------------------------------------------------


def number(value: Any) -> Any:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return value
    return int(result) if result.is_integer() and "." not in str(value) else result


def parse_log(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(tag, stats) of every JSON log line; keys without fairseq's ``train_``-style prefix."""
    with open(path) as lines:
        for line in lines:
            match = LOG_LINE.search(line)
            if not match:
                continue
            tag, stats = match.group(1), json.loads(match.group(2))
            record = {}
            for key, value in stats.items():
                for prefix in (f"{tag}_", "train_inner_", "train_", "valid_"):
                    if key.startswith(prefix):
                        key = key[len(prefix):]
                        break
                record[key] = number(value)
            yield tag, record


def signal_keys(record: dict[str, Any]) -> dict[str, Any]:
    """The discriminator and sample figures of a log record, and its update count."""
    keep = {k: v for k, v in record.items() if k.startswith(("disc", "sample"))}
    return {"num_updates": record.get("num_updates"), **keep}


def pick_intervals(path: str, warmup: int) -> dict[str, Any]:
    """Warm-up end, first interval after the warm-up, last interval; and the last valid."""
    inner = [r for tag, r in parse_log(path) if tag == "train_inner" and "num_updates" in r]
    valid = [r for tag, r in parse_log(path) if tag == "valid"]
    picked: dict[str, Any] = {}
    before = [r for r in inner if r["num_updates"] <= warmup]
    after = [r for r in inner if r["num_updates"] - LOG_INTERVAL >= warmup]
    if before:
        picked["warmup_end"] = signal_keys(before[-1])
    if after:
        picked["first_after_warmup"] = signal_keys(after[0])
    if inner:
        picked["last"] = signal_keys(inner[-1])
    extra = ("loss", "nll_loss", "nll_oracle", "oracle_invalid")
    last_valid = None
    if valid:
        last_valid = {**signal_keys(valid[-1]),
                      **{k: valid[-1][k] for k in extra if k in valid[-1]}}
    return {"intervals": picked, "last_valid": last_valid, "logged_intervals": len(inner)}


# -- stage 4: free samples against the batch width -------------------------------------


def real_rows(task: Any) -> dict[str, Any]:
    """Length of the real training rows, tokens including EOS."""
    sizes = task.dataset("train").sizes
    return {"rows": int(len(sizes)), "mean_len": round(float(sizes.mean()), 3),
            "max_len": int(sizes.max())}


def free_sample_audit(
    checkpoint: str, data: str, batches: int, max_len: int, sampler: Any
) -> tuple[dict[str, Any], Any]:
    """How often a free sample is longer than its training batch's target width.

    Batches are made as fairseq-train makes them (same ``--max-tokens``, batch-size
    multiple, seed and shuffling; epochs repeat until ``batches`` are drawn); one sample
    per row is drawn from scratch with ``max_len``, well beyond any real row.
    """
    import torch
    from fairseq import checkpoint_utils, utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data})
    model = models[0].eval()
    task.load_dataset("train")
    dataset = task.dataset("train")
    pad = task.target_dictionary.pad()
    generator = torch.Generator().manual_seed(SEED)
    counts = dict(rows=0, cut=0, at_limit=0, sample_tokens=0, real_tokens=0, width_sum=0)
    seen, epoch = 0, 1
    while seen < batches:
        iterator = task.get_batch_iterator(
            dataset=dataset, max_tokens=MAX_TOKENS,
            max_positions=utils.resolve_max_positions(task.max_positions(),
                                                      model.max_positions()),
            required_batch_size_multiple=8, seed=SEED, epoch=epoch, num_workers=0,
        ).next_epoch_itr(shuffle=True)
        for batch in iterator:
            if seen == batches:
                break
            width = batch["target"].size(1)
            rows = sampler(model, batch, 0, 1, max_len=max_len, generator=generator)
            lengths = rows.ne(pad).sum(dim=1)
            counts["rows"] += lengths.numel()
            counts["cut"] += int(lengths.gt(width).sum())
            counts["at_limit"] += int(lengths.ge(max_len).sum())
            counts["sample_tokens"] += int(lengths.sum())
            counts["real_tokens"] += int(batch["target"].ne(pad).sum())
            counts["width_sum"] += width * lengths.numel()
            seen += 1
        epoch += 1
    rows = max(counts["rows"], 1)
    return {
        "checkpoint": checkpoint, "batches": seen, "rows": counts["rows"],
        "max_len": max_len,
        "cut_share": round(counts["cut"] / rows, 4),
        "mean_free_len": round(counts["sample_tokens"] / rows, 3),
        "mean_real_len": round(counts["real_tokens"] / rows, 3),
        "mean_width": round(counts["width_sum"] / rows, 3),
        "at_limit_share": round(counts["at_limit"] / rows, 4),
    }, task


# -- report ---------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    return "-" if value is None else str(value)


def print_table(report: dict[str, Any]) -> None:
    intervals = report["training"]["intervals"]
    keys = sorted({k for r in intervals.values() for k in r if k != "num_updates"})
    print(f"\n== signal audit: {report['dataset']}, tag {report['tag']}, "
          f"plugin {report['plugin']['imported']}")
    real = report["real_rows"]
    print(f"real training rows: {real['rows']}, mean length {real['mean_len']:.2f} tokens "
          f"with EOS (longest {real['max_len']})")
    header = f"{'interval':<20}{'update':>7}" + "".join(f"{k:>17}" for k in keys)
    print(header)
    for name, record in intervals.items():
        print(f"{name:<20}{fmt(record.get('num_updates')):>7}"
              + "".join(f"{fmt(record.get(k)):>17}" for k in keys))
    valid = report["training"]["last_valid"]
    if valid:
        print("last validation: " + ", ".join(f"{k} {fmt(v)}" for k, v in valid.items()))
    print(f"\nfree samples (prefix 0, m 1) per training batch, --max-tokens {MAX_TOKENS}:")
    print(f"{'generator':<12}{'batches':>8}{'rows':>8}{'mean len':>10}{'real len':>10}"
          f"{'width':>8}{'> width':>9}{'at limit':>10}")
    for name, audit in report["free_samples"].items():
        print(f"{name:<12}{audit['batches']:>8}{audit['rows']:>8}{audit['mean_free_len']:>10.2f}"
              f"{audit['mean_real_len']:>10.2f}{audit['mean_width']:>8.2f}"
              f"{audit['cut_share']:>9.1%}{audit['at_limit_share']:>10.1%}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--workdir", required=True, help="data, MLE and fine-tuning runs")
    parser.add_argument("--user-dir", required=True, help="the fairseq_maligan folder to use")
    parser.add_argument("--tag", required=True, help="name of the fine-tuning run")
    parser.add_argument("--updates", type=int, default=150, help="fine-tuning updates")
    parser.add_argument("--disc-arch", default="cnn_discriminator")
    parser.add_argument("--output-json", help="default: WORKDIR/TAG.json")
    parser.add_argument("--ptb-dir", default=PTB_DIR, help="Mikolov's PTB text")
    parser.add_argument("--mle-budget", help="replaces the MLE budget, e.g. '--max-update 800'")
    parser.add_argument("--audit-batches", type=int, default=200,
                        help="training batches for the free-sample count")
    parser.add_argument("--reuse-finetune", action="store_true",
                        help="keep a finished fine-tuning run of this tag, only report")
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)
    args.user_dir = os.path.abspath(args.user_dir).rstrip(os.sep)
    if args.tag in ("mle", "raw", "data-bin"):
        parser.error(f"--tag {args.tag} is a folder of the work folder")
    if args.updates <= WARMUP_UPDATES + LOG_INTERVAL:
        parser.error(f"--updates must exceed the warm-up plus one log interval "
                     f"({WARMUP_UPDATES + LOG_INTERVAL})")
    args.output_json = args.output_json or os.path.join(args.workdir, f"{args.tag}.json")
    return args


def main() -> None:
    args = parse_args()
    started = time.time()
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    plugin = import_plugin(args.user_dir)
    sampler = importlib.import_module(f"{plugin.__name__}.sampling").sample_continuations
    env = plugin_env(args.user_dir)
    os.makedirs(args.workdir, exist_ok=True)
    imported = subprocess_plugin_file(args.user_dir, args.workdir)
    if os.path.dirname(imported) != args.user_dir:
        sys.exit(f"signal_audit: fairseq runs would import {imported}, not {args.user_dir}")

    stages: dict[str, Any] = {}
    stages["data"] = prepare_data(args, env)
    stages["mle"] = pretrain(args, env)
    stages["finetune"] = finetune(args, env)
    training = pick_intervals(stages["finetune"]["log"], WARMUP_UPDATES)

    audit_started = time.time()
    data = os.path.join(args.workdir, "data-bin")
    max_len = 4 * DATASETS[args.dataset]["tokens_per_sample"]
    free: dict[str, Any] = {}
    task = None
    for name, path in (("mle", os.path.join(args.workdir, "mle", "checkpoint_best.pt")),
                       (args.tag, os.path.join(args.workdir, args.tag, "checkpoint_last.pt"))):
        print(f"== free samples of {name} over {args.audit_batches} training batches", flush=True)
        free[name], task = free_sample_audit(path, data, args.audit_batches, max_len, sampler)
    stages["audit"] = {"wall_s": round(time.time() - audit_started, 1)}

    report = {
        "dataset": args.dataset, "tag": args.tag, "workdir": args.workdir,
        "plugin": {"user_dir": args.user_dir, "imported": plugin.__file__,
                   "imported_by_fairseq_runs": imported, "git": git_state(args.user_dir)},
        "settings": {
            "updates": args.updates, "disc_arch": args.disc_arch,
            "disc_warmup_updates": WARMUP_UPDATES, "log_interval": LOG_INTERVAL,
            "max_tokens": MAX_TOKENS, **DATASETS[args.dataset], "seed": SEED,
            "threads": env["OMP_NUM_THREADS"],
        },
        "real_rows": real_rows(task),
        "training": training,
        "free_samples": free,
        "stages": stages,
        "total_wall_s": round(time.time() - started, 1),
    }
    write_json(args.output_json, report)
    print_table(report)
    print(f"\nreport: {args.output_json} ({report['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
