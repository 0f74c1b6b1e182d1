"""The demo behind ``make demo``: MLE versus MaliGAN on a synthetic oracle, no download.

1. builds a seeded random LSTM oracle and samples train/valid/test sets from it;
2. binarises them with ``fairseq-preprocess``;
3. pretrains a fairseq ``lstm_lm`` generator with MLE;
4. from that checkpoint, trains for the same number of updates (a) MLE further and
   (b) ``maligan_mixed``;
5. prints NLL-oracle (the oracle's NLL of 1,000 generator samples) and NLL-test (the
   generator's NLL of held-out oracle data, equal to stock ``fairseq-eval-lm``'s with
   ``--sample-break-mode eos``), in nats per token, with a few sample lines.

    python scripts/demo.py [--out demo_output] [--quick] [--maligan-option=--rescore-dropout]
"""

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import torch

import fairseq_maligan
from fairseq_maligan.errors import install_excepthook
from fairseq_maligan.evaluation import (
    detokenize,
    load_generator,
    nll_oracle,
    nll_test,
    sample_rows,
)
from fairseq_maligan.oracle import Oracle

PLUGIN = os.path.dirname(fairseq_maligan.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r"\| (train|valid) \|")


def run(title: str, tool: str, args: list[str], log_path: str) -> str:
    """Run a fairseq console tool, echo its epoch summaries, keep the full log."""
    print(f"\n== {title}", flush=True)
    started = time.time()
    lines = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"fairseq_cli.{tool}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if PROGRESS.search(line):
                print("   " + line.split(" | ", 3)[-1].strip()[:150], flush=True)
        proc.wait()
    if proc.returncode != 0:
        sys.exit(f"{title} failed; see {log_path}:\n{''.join(lines[-20:])}")
    print(f"   done in {time.time() - started:.0f} s (log: {log_path})", flush=True)
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "demo_output"))
    parser.add_argument("--quick", action="store_true", help="a much smaller run (tests)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--maligan-option", action="append", default=[],
                        help="an extra fairseq-train option of the MaliGAN run (repeatable), "
                        "e.g. --maligan-option=--rescore-dropout")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    scale = dict(vocab=100, train=600, mle_epochs=3, updates=12, samples=200) if args.quick \
        else dict(vocab=500, train=5000, mle_epochs=25, updates=150, samples=1000)
    started = time.time()
    out = os.path.abspath(args.out)
    raw, data = os.path.join(out, "raw"), os.path.join(out, "data-bin")
    for stale in ("raw", "data-bin", "mle", "mle_continued", "maligan"):
        shutil.rmtree(os.path.join(out, stale), ignore_errors=True)
    os.makedirs(out, exist_ok=True)

    print(f"== synthetic oracle: vocabulary {scale['vocab']}, length 20, LSTM hidden 32")
    subprocess.run([
        sys.executable, os.path.join(ROOT, "scripts", "make_oracle_data.py"), "--out", raw,
        "--vocab-size", str(scale["vocab"]), "--seq-len", "20", "--train", str(scale["train"]),
        "--valid", str(scale["train"] // 10), "--test", str(scale["train"] // 10),
        "--seed", str(args.seed),
    ], check=True)
    run("fairseq-preprocess", "preprocess", [
        "--only-source", "--trainpref", f"{raw}/train.txt", "--validpref", f"{raw}/valid.txt",
        "--testpref", f"{raw}/test.txt", "--destdir", data, "--workers", "2",
    ], os.path.join(out, "preprocess.log"))

    # --user-dir in the MLE runs too: with torch >= 2.6, stock fairseq cannot reload its
    # own lstm_lm checkpoints; the plugin saves them in a form that stock tools load.
    generator = [
        "--user-dir", PLUGIN, "--arch", "lstm_lm", "--decoder-embed-dim", "32",
        "--decoder-hidden-size", "32", "--decoder-out-embed-dim", "32",
        "--sample-break-mode", "eos", "--tokens-per-sample", "64", "--max-tokens", "2000",
        "--cpu", "--seed", str(args.seed),
        "--log-format", "simple", "--log-interval", "10", "--no-epoch-checkpoints",
        "--num-workers", "0", "--data-buffer-size", "0",  # no batch thread left at exit
    ]
    mle_dir = os.path.join(out, "mle")
    run("MLE pretraining (fairseq-train, lstm_lm, cross_entropy)", "train", [
        data, "--task", "language_modeling", *generator, "--optimizer", "adam", "--lr", "0.01",
        "--max-epoch", str(scale["mle_epochs"]), "--save-dir", mle_dir,
    ], os.path.join(out, "mle.log"))
    pretrained = os.path.join(mle_dir, "checkpoint_best.pt")

    continued = os.path.join(out, "mle_continued")
    run(f"MLE continued for {scale['updates']} updates (the fair baseline)", "train", [
        data, "--task", "language_modeling", *generator, "--optimizer", "adam", "--lr", "0.001",
        "--max-update", str(scale["updates"]), "--finetune-from-model", pretrained,
        "--save-dir", continued,
    ], os.path.join(out, "mle_continued.log"))

    maligan = os.path.join(out, "maligan")
    run(f"MaliGAN fine-tuning for {scale['updates']} updates (maligan_mixed)", "train", [
        data, "--task", "maligan_language_modeling",
        "--oracle-path", f"{raw}/oracle.pt", *generator,
        "--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.001",
        "--num-samples", "4", "--prefix-init", "12", "--prefix-decay", "2",
        "--prefix-decay-updates", str(max(scale["updates"] // 8, 1)),
        "--disc-arch", "cnn_discriminator", "--disc-lr", "0.001",
        "--disc-warmup-updates", str(scale["updates"] // 10),
        "--max-update", str(scale["updates"]), "--finetune-from-model", pretrained,
        "--save-dir", maligan, *args.maligan_option,
    ], os.path.join(out, "maligan.log"))

    print("\n== evaluation: samples scored by the oracle, test data by each generator", flush=True)
    oracle = Oracle.load(f"{raw}/oracle.pt")
    with open(f"{raw}/test.txt") as test_file:
        test_ids = torch.tensor([[int(w[1:]) for w in line.split()] for line in test_file])
    oracle_floor = float(oracle.nll(test_ids).mean())
    rows = []
    for name, checkpoint in [
        ("MLE (pretrained)", pretrained),
        ("MLE (continued)", os.path.join(continued, "checkpoint_last.pt")),
        ("MaliGAN (maligan_mixed)", os.path.join(maligan, "checkpoint_last.pt")),
    ]:
        model, task = load_generator(checkpoint, data)
        samples = sample_rows(model, scale["samples"], oracle.seq_len + 1, seed=args.seed)
        score, invalid = nll_oracle(oracle, samples, task.target_dictionary)
        test = nll_test(model, task, "test")
        rows.append((name, score, test, invalid, detokenize(samples[:3], task.target_dictionary)))

    print(f"\nResults ({scale['samples']} samples each; nats per token; lower is better; "
          "invalid: samples that are not 20 tokens then EOS, left out of NLL-oracle)")
    print(f"{'generator':<26}{'NLL-oracle':>12}{'NLL-test':>12}{'invalid':>10}")
    print(f"{'oracle (its own test data)':<26}{oracle_floor:>12.3f}{'':>12}")
    for name, score, test, invalid, _ in rows:
        print(f"{name:<26}{score:>12.3f}{test:>12.3f}{invalid:>10.1%}")
    for name, _, _, _, lines in rows:
        print(f"\n{name} samples:")
        for line in lines:
            print("  " + line)
    print(f"\ntotal time {time.time() - started:.0f} s; everything is in {out}")


if __name__ == "__main__":
    install_excepthook()
    main()
