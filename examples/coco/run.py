"""The text-GAN caption benchmark (Texygen's MS-COCO set): BLEU-2..5 and self-BLEU-2..5.

Training text: ``image_coco.txt`` (9,999 captions; every 20th line is held out as the
validation split); references and test split: ``test_coco.txt`` (9,999 captions), as
in Texygen, LeakGAN and RelGAN. Generator: ``lstm_lm`` with embedding and hidden 32
(Texygen's). As Texygen: 9,984 samples, NLTK tokenization and method1 smoothing;
BLEU-n scores each sample against all test captions, averaged; self-BLEU-n scores each
of the first 500 samples against the other 499 (Texygen's default fast mode). The
temperature sweep's self-BLEU-4 scores all 9,984 samples, each against the others: over
500 its sampling noise (about ± .017) is several times BLEU-4's (± .0035) and decides
whether a point lies beyond MLE's curve. Every method continues the same MLE checkpoint
for the same number of updates (``examples/experiment.py``).

    python examples/coco/run.py --quick     # a minute or two
    python examples/coco/run.py             # the full experiment (README.md)
"""

from __future__ import annotations

import sys
import time
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
DATA = HERE.parents[2] / "shared" / "data" / "texygen"
ORDERS = (2, 3, 4, 5)
MAX_LEN = 40
# Texygen (geek-ai/Texygen, docs/evaluation.md): BLEU-n on the COCO test set and self-BLEU-n
# of each model's samples (their generator samples a fixed length; self-BLEU in its default
# fast mode scores the first 500 samples, each against the other 499).
PUBLISHED = {
    "Texygen MLE": dict(bleu2=.731, bleu3=.497, bleu4=.305, bleu5=.189, self_bleu2=.916,
                        self_bleu3=.769, self_bleu4=.583, self_bleu5=.408),
    "Texygen SeqGAN": dict(bleu2=.745, bleu3=.498, bleu4=.294, bleu5=.180, self_bleu2=.950,
                           self_bleu3=.840, self_bleu4=.670, self_bleu5=.489),
    "Texygen MaliGAN": dict(bleu2=.673, bleu3=.432, bleu4=.257, bleu5=.159, self_bleu2=.918,
                            self_bleu3=.781, self_bleu4=.606, self_bleu5=.437),
}
QUICK = Budget.quick(prefix_init=8, prefix_decay=4, prefix_decay_updates=3)
# Texygen's budget: 80 MLE epochs at batch 64 (TextGAN-PyTorch: 150, the cap here), then
# adversarial training at batch 64; 64 captions of 11.5 tokens with EOS are about 734 tokens.
FULL = Budget(mle_epochs=80, mle_patience=10, mle_max_epochs=150, mle_lr=0.005,
              max_tokens=734, finetune_max_tokens=734,
              updates=200, lr=1e-3, rollouts=8, prefix_init=12, prefix_decay=2,
              prefix_decay_updates=35, disc_lr=1e-3,
              **FULL_DISCRIMINATOR, disc_dim=64,
              eval_samples=9984)
# Texygen's sample count: 156 batches of 64; self-BLEU in its default fast mode.
SELF_BLEU_SAMPLES = 500


def main() -> None:
    args = parse_mode(__doc__.splitlines()[0], HERE, QUICK, FULL, seeds=True)
    budget, started = args.budget, time.time()
    train = read_references(str(DATA / "image_coco.txt"))
    test = read_references(str(DATA / "test_coco.txt"))
    if args.quick:
        train, test = train[:2000], test[:500]
    dim = "16" if args.quick else "32"
    generator = ["--arch", "lstm_lm", "--decoder-embed-dim", dim, "--decoder-hidden-size", dim,
                 "--decoder-out-embed-dim", dim]
    self_bleu_samples = min(SELF_BLEU_SAMPLES, budget.eval_samples)
    keys = [f"bleu{n}" for n in ORDERS] + [f"self_bleu{n}" for n in ORDERS]

    def run_seed(out: Path, seed: int) -> dict[str, Any]:
        raw = out / "raw"
        write_lines(raw / "train.txt", [s for i, s in enumerate(train) if i % 20 != 19])
        write_lines(raw / "valid.txt", [s for i, s in enumerate(train) if i % 20 == 19])
        write_lines(raw / "test.txt", test)
        experiment = LMExperiment(out, generator, budget, seed=seed, threads=args.threads,
                                  jobs=args.jobs, tokens_per_sample=MAX_LEN)
        checkpoints = experiment.run_all(raw)
        scores = score_text(experiment, checkpoints, raw / "test.txt", ORDERS, MAX_LEN,
                            self_bleu_samples=self_bleu_samples)
        sweep = sweep_text(experiment, checkpoints, raw / "test.txt", order=4, max_len=MAX_LEN,
                           with_pretrained=True)
        return {"scores": scores, "sweep": sweep, "stages": experiment.stages}

    results = over_seeds(args.out, args.seeds, budget, run_seed, keys)
    write_results(args.out / "results.json", {
        "mode": args.mode, "budget": budget, **results, "published_texygen": PUBLISHED,
        "seconds": round(time.time() - started, 1),
    })
    print_over_seeds(f"BLEU-n against test_coco (higher is better) and self-BLEU-n (lower is "
                     f"more diverse); {budget.updates} generator updates after MLE", results,
                     keys, PUBLISHED)
    print(f"\nresults.json in {args.out}, sweep.png in its seed<N>/")


if __name__ == "__main__":
    install_excepthook()
    main()
