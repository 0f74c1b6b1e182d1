"""Fine-tune your own LM: a stock ``transformer_lm`` with adaptive input and softmax.

The use this plugin is for: a language model pretrained with stock fairseq (``--task
language_modeling --criterion adaptive_loss``, no ``--user-dir``), to convergence, then
fine-tuned from that checkpoint by every criterion for the same number of updates
(``examples/experiment.py``). Data: sentence-level PTB as in ``examples/ptb`` (sentences
over 35 words removed). Generator: two decoder layers of width 256 (4 heads, FFN 1,024),
adaptive input and softmax with cutoffs 2,000 and 5,000 and tied adaptive weights: 2.47 M
parameters. Perplexities come from stock ``fairseq-eval-lm``; BLEU-4 and self-BLEU-4 of
1,000 samples at T = 1 against the test set, with a temperature sweep.

    python examples/transformer_lm/run.py --quick   # a minute or two (1,000 sentences)
    python examples/transformer_lm/run.py           # the full experiment (README.md)
"""

from __future__ import annotations

import sys
from pathlib import Path

from fairseq_maligan.errors import install_excepthook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the driver
from experiment import FULL_DISCRIMINATOR, Budget, parse_mode  # noqa: E402
from ptb.run import run  # noqa: E402

HERE = Path(__file__).resolve().parent
QUICK = Budget.quick(mle_lr=1e-3, rollouts=2, prefix_init=30, prefix_decay=5,
                     prefix_decay_updates=1)
# Pretraining: at least 10 epochs, then on until the valid loss has not improved for 3
# (at most 100: at 40 it was still improving); the fine-tuning budget is the PTB example's.
FULL = Budget(mle_epochs=10, mle_patience=3, mle_max_epochs=100, mle_lr=5e-4,
              max_tokens=4000, finetune_max_tokens=2000, updates=180, lr=1e-4, rollouts=4,
              prefix_init=30, prefix_decay=5, prefix_decay_updates=30, disc_lr=1e-3,
              **FULL_DISCRIMINATOR, disc_dim=64)


def generator_args(quick: bool) -> list[str]:
    """The ``transformer_lm`` (quick: one layer of width 16, cutoffs fitting its vocabulary)."""
    dim, ffn, layers, heads, cutoff = (
        ("16", "32", "1", "2", "200,500") if quick else ("256", "1024", "2", "4", "2000,5000"))
    return ["--arch", "transformer_lm", "--decoder-layers", layers, "--decoder-embed-dim", dim,
            "--decoder-ffn-embed-dim", ffn, "--decoder-attention-heads", heads,
            "--decoder-input-dim", dim, "--decoder-output-dim", dim, "--adaptive-input",
            "--adaptive-input-cutoff", cutoff, "--adaptive-input-factor", "4",
            "--adaptive-softmax-cutoff", cutoff, "--adaptive-softmax-factor", "4",
            "--tie-adaptive-weights", "--dropout", "0.1" if quick else "0.3"]


def main() -> None:
    args = parse_mode(__doc__.splitlines()[0], HERE, QUICK, FULL, seeds=True)
    warmup = "10" if args.quick else "1000"
    run(args, generator_args(args.quick), mle_criterion="adaptive_loss",
        pretrain_args=["--lr-scheduler", "inverse_sqrt", "--warmup-updates", warmup,
                       "--warmup-init-lr", "1e-7"])


if __name__ == "__main__":
    install_excepthook()
    main()
