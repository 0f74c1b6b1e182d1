"""Chinese quatrains (the paper's Table 1): Poem-5 and Poem-7, BLEU-2 and perplexity.

- Poem-5: the 16,394 five-character quatrains of SeqGAN (``shi.txt``), 24 tokens each
  (characters and the verse-ending punctuation). Generator ``lstm_lm`` hidden 32.
- Poem-7: the seven-character quatrains of THU-CCPC's validation and test files
  (8,998), written in the same form (32 tokens). Generator ``lstm_lm`` hidden 100.

Split of both (deterministic, by line number i): test if i % 10 == 9, valid if
i % 20 == 8, train otherwise. BLEU-2 is the text-GAN figure: each of 1,000 samples scored
against the whole test split as references, averaged (``fairseq_maligan.metrics``).
Perplexity is per token (EOS counted) on the test split. Every method continues the same
MLE checkpoint for the same number of updates (``examples/experiment.py``); the
discriminator is a bidirectional 2-layer LSTM of hidden 32, as in the paper.

    python examples/poems/run.py --quick     # a minute or two, Poem-5 only, small
    python examples/poems/run.py             # both corpora (README.md)

Each corpus keeps its results in ``<out>/<corpus>/results.json`` and is not run again
while that file exists, so ``--corpus poem5`` and ``--corpus poem7`` can run in two
shells and a plain run then gathers both into ``<out>/results.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from fairseq_maligan.errors import install_excepthook

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
DATA = HERE.parents[2] / "shared" / "data" / "chinese-poems"
# Che et al. 2017, Table 1 (BLEU-2 / perplexity); SeqGAN's Poem-7 is not reported.
PUBLISHED = {
    "poem5": {"MLE": {"bleu2": 0.6934, "test_ppl": 564.1}, "SeqGAN": {"bleu2": 0.7389},
              "MaliGAN-basic": {"bleu2": 0.7406, "test_ppl": 548.6},
              "MaliGAN-full": {"bleu2": 0.7628, "test_ppl": 542.7}},
    "poem7": {"MLE": {"bleu2": 0.3186, "test_ppl": 192.7},
              "MaliGAN-basic": {"bleu2": 0.4892, "test_ppl": 182.2},
              "MaliGAN-full": {"bleu2": 0.5526, "test_ppl": 180.2}},
}
HIDDEN = {"poem5": 32, "poem7": 100}
LENGTH = {"poem5": 24, "poem7": 32}
QUICK = Budget.quick(prefix_init=16, prefix_decay=8, prefix_decay_updates=3)
# No published pretraining budget found for this set-up: the old floor, then on until
# the valid loss has not improved for 3 epochs.
FULL = Budget(mle_epochs=12, mle_patience=3, mle_max_epochs=50,
              mle_lr=0.005, max_tokens=2500, finetune_max_tokens=1250,
              updates=200, lr=1e-3, rollouts=8, prefix_init=20, prefix_decay=4,
              prefix_decay_updates=40, disc_lr=1e-3,
              **FULL_DISCRIMINATOR, disc_dim=32)


def quatrains(corpus: str, limit: int | None) -> list[str]:
    """Space-separated characters, each verse followed by ， or 。 (shi.txt's form)."""
    if corpus == "poem5":
        poems = [line.strip() for line in open(DATA / "shi.txt", encoding="utf-8")]
    else:
        poems = []
        for name in ("ccpc_valid_v1.0.json", "ccpc_test_v1.0.json"):
            for line in open(DATA / name, encoding="utf-8"):
                verses = json.loads(line)["content"].split("|")
                if len(verses) == 4 and all(len(v) == 7 for v in verses):
                    poems.append(" ".join(
                        " ".join(v) + (" ，" if i % 2 == 0 else " 。")
                        for i, v in enumerate(verses)))
    return [p for p in poems if p][:limit]


def split(poems: list[str], raw: Path) -> None:
    """train / valid / test by line number (test i%10==9, valid i%20==8)."""
    parts: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for i, poem in enumerate(poems):
        parts["test" if i % 10 == 9 else "valid" if i % 20 == 8 else "train"].append(poem)
    for name, lines in parts.items():
        write_lines(raw / f"{name}.txt", lines)


def main() -> None:
    args = parse_mode(__doc__.splitlines()[0], HERE, QUICK, FULL, seeds=True, **{"--corpus": dict(
        choices=["poem5", "poem7", "both"], help="default: both (quick: poem5)")})
    corpora = ["poem5", "poem7"] if (args.corpus or ("poem5" if args.quick else "both")) \
        == "both" else [args.corpus or "poem5"]
    budget = args.budget
    keys = ("bleu2", "self_bleu2", "test_ppl")
    results: dict[str, Any] = {"mode": args.mode, "budget": budget, "published": PUBLISHED}
    for corpus in corpora:
        started = time.time()
        poems = quatrains(corpus, 2000 if args.quick else None)
        hidden = str(HIDDEN[corpus] if not args.quick else 16)
        generator = ["--arch", "lstm_lm", "--decoder-embed-dim", hidden,
                     "--decoder-hidden-size", hidden, "--decoder-out-embed-dim", hidden]

        def run_seed(out: Path, seed: int, corpus: str = corpus, poems: list[str] = poems,
                     generator: list[str] = generator) -> dict[str, Any]:
            split(poems, out / "raw")
            experiment = LMExperiment(out, generator, budget, seed=seed, threads=args.threads,
                                      jobs=args.jobs, tokens_per_sample=LENGTH[corpus] + 1,
                                      discriminator=["--disc-layers", "2", "--disc-cell", "lstm"])
            checkpoints = experiment.run_all(out / "raw")
            references = out / "raw" / "test.txt"
            return {"scores": score_text(experiment, checkpoints, references, orders=(2,),
                                         max_len=LENGTH[corpus] + 1),
                    "sweep": sweep_text(experiment, checkpoints, references, order=2,
                                        max_len=LENGTH[corpus] + 1),
                    "stages": experiment.stages}

        results[corpus] = {**over_seeds(args.out / corpus, args.seeds, budget, run_seed, keys),
                           "seconds": round(time.time() - started, 1)}
        print_over_seeds(f"{corpus}: BLEU-2 (higher is better), self-BLEU-2, test perplexity "
                         f"(base e, per token); {budget.updates} generator updates after MLE",
                         results[corpus], keys, PUBLISHED[corpus])
    write_results(args.out / "results.json", results)
    print(f"\nresults.json in {args.out}, sweep.png in <corpus>/seed<N>/")


if __name__ == "__main__":
    install_excepthook()
    main()
