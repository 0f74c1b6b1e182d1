"""Sentence-level Penn Treebank (the paper's Table 2): valid/test perplexity of every model.

Mikolov's PTB (10k vocabulary, ``<unk>``), one sentence per sample, sentences over 35
words removed from every split (as the paper). Generator: fairseq's ``lstm_lm``, one
layer, embedding 200, hidden 200 (the paper used a GRU of the same sizes; fairseq ships
no GRU language model). Discriminator: a bidirectional GRU (``rnn_discriminator``).
MaliGAN-full starts from N = 30 and removes K = 5 tokens every ``prefix_decay_updates``.
Perplexities come from stock ``fairseq-eval-lm`` (no ``--user-dir``), base e per token
with EOS counted, one sentence at a time. Every method continues the same MLE checkpoint
for the same number of updates (``examples/experiment.py``).

    python examples/ptb/run.py --quick     # a minute or two (1,000 sentences, tiny model)
    python examples/ptb/run.py             # the full experiment (README.md)
"""

from __future__ import annotations

import sys
import time
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fairseq_maligan.errors import install_excepthook
from fairseq_maligan.evaluation import read_references

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the driver
from experiment import (  # noqa: E402
    FULL_DISCRIMINATOR,
    Budget,
    LMExperiment,
    over_seeds,
    parse_mode,
    print_over_seeds,
    score_text,
    sweep_text,
    write_lines,
    write_results,
)

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "ptb"
MAX_WORDS = 35
# Che et al. 2017, Table 2 (perplexity).
PUBLISHED = {"MLE": {"valid_ppl": 141.9, "test_ppl": 138.2},
             "MaliGAN-basic": {"valid_ppl": 131.6, "test_ppl": 125.3},
             "MaliGAN-full": {"valid_ppl": 128.0, "test_ppl": 123.8}}
QUICK = Budget.quick(rollouts=2, prefix_init=30, prefix_decay=5, prefix_decay_updates=1)
# No published pretraining budget found for this set-up: the old floor, then on until
# the valid loss has not improved for 3 epochs.
FULL = Budget(mle_epochs=8, mle_patience=3, mle_max_epochs=40,
              mle_lr=0.003, max_tokens=4000, finetune_max_tokens=2000,
              updates=180, lr=3e-4, rollouts=4, prefix_init=30, prefix_decay=5,
              prefix_decay_updates=30, disc_lr=1e-3,
              **FULL_DISCRIMINATOR, disc_dim=64)


def write_splits(raw: Path, quick: bool) -> dict[str, int]:
    """PTB's splits without the sentences over ``MAX_WORDS`` words (quick: the first 1,000
    training and 200 valid/test sentences) as ``raw/{train,valid,test}.txt``; returns how
    many sentences each split lost."""
    removed = {}
    for split in ("train", "valid", "test"):
        sentences = read_references(str(DATA / f"ptb.{split}.txt"))
        kept = [s for s in sentences if len(s.split()) <= MAX_WORDS]
        removed[split] = len(sentences) - len(kept)
        write_lines(raw / f"{split}.txt", kept[:1000 if split == "train" else 200]
                    if quick else kept)
    return removed


def run(args: Namespace, generator: Sequence[str], **experiment_options: Any) -> None:
    """PTB's splits, every method on them (``LMExperiment`` with ``experiment_options``)
    for each seed, stock perplexities, BLEU-4 and the sweep: ``results.json`` (the tables
    over seeds) and a printed table."""
    budget, started = args.budget, time.time()
    splits = ("test",) if args.quick else ("valid", "test")
    keys = [f"{s}_ppl" for s in splits] + ["bleu4", "self_bleu4"]

    def run_seed(out: Path, seed: int) -> dict[str, Any]:
        raw = out / "raw"
        removed = write_splits(raw, args.quick)
        experiment = LMExperiment(out, generator, budget, seed=seed, threads=args.threads,
                                  jobs=args.jobs, tokens_per_sample=MAX_WORDS + 1,
                                  **experiment_options)
        checkpoints = experiment.run_all(raw)
        scores = score_text(experiment, checkpoints, raw / "test.txt", orders=(4,),
                            max_len=MAX_WORDS + 1, splits=splits, stock_eval=True,
                            tokenize="none")
        sweep = sweep_text(experiment, checkpoints, raw / "test.txt", order=4,
                           max_len=MAX_WORDS + 1, tokenize="none")
        return {"removed_over_35_words": removed, "scores": scores, "sweep": sweep,
                "stages": experiment.stages}

    results = over_seeds(args.out, args.seeds, budget, run_seed, keys)
    write_results(args.out / "results.json", {
        "mode": args.mode, "budget": budget, **results, "published": PUBLISHED,
        "seconds": round(time.time() - started, 1),
    })
    print_over_seeds(f"perplexity (stock fairseq-eval-lm, base e, per token; lower is "
                     f"better), BLEU-4 and self-BLEU-4; {budget.updates} generator updates "
                     "after MLE", results, keys, PUBLISHED)
    print(f"\nresults.json in {args.out}, sweep.png in its seed<N>/")


def main() -> None:
    args = parse_mode(__doc__.splitlines()[0], HERE, QUICK, FULL, seeds=True)
    dim = "32" if args.quick else "200"
    run(args, ["--arch", "lstm_lm", "--decoder-embed-dim", dim, "--decoder-hidden-size", dim,
               "--decoder-out-embed-dim", dim, "--dropout", "0.2"])


if __name__ == "__main__":
    install_excepthook()
    main()
