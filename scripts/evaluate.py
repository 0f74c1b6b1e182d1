"""Evaluate trained language-model generators: NLL-test, NLL-oracle, BLEU and self-BLEU.

    python scripts/evaluate.py --path CKPT [--path CKPT2 ...] [--name NAME ...] [--data DIR] \\
        [--oracle oracle.pt] [--references test.txt] [--num-samples 1000] \\
        [--orders 2 3 4 5] [--tokenize nltk] [--self-bleu-samples N] [--temperature 1.0] \\
        [--output results.json]

For every checkpoint, at ``--temperature`` (the sampling temperature, and the softmax
temperature of NLL-test):

- always: ``nll_test``, the mean per-token NLL of the binarised ``--split`` (EOS included),
  and ``perplexity`` = exp(nll_test), base e;
- with ``--oracle``: ``nll_oracle``, the oracle's NLL of ``--num-samples`` samples, and
  ``oracle_invalid``, the fraction of samples that are not exactly an oracle sequence
  (the oracle's length, then EOS), and ``nll_oracle_fixed``, SeqGAN's NLL-oracle of as
  many samples drawn at exactly the oracle's length (EOS banned until then);
- with ``--references``: ``bleu{n}`` of the samples against the reference text (every
  line a reference, Texygen style) and ``self_bleu{n}`` of the first
  ``--self-bleu-samples`` samples (default: all), for every n in ``--orders`` (self-BLEU
  uses the same max n-gram orders as BLEU). Both are NLTK's ``sentence_bleu`` with
  uniform weights and ``SmoothingFunction().method1``, on ``--tokenize`` tokens
  (default ``nltk``: the Treebank tokenizer; ``none``: whitespace); every result states
  ``tokenize`` and ``self_bleu_samples``.

NLLs are in nats per token. ``--data`` replaces the checkpoint's data directory. Prints a
table and, with ``--output``, writes the results and settings as JSON.
"""

import argparse
import json
import logging

from fairseq_maligan.errors import install_excepthook, output_file, positive_float, positive_int
from fairseq_maligan.evaluation import (
    BLEU_SETTINGS,
    add_bleu_arguments,
    add_checkpoint_arguments,
    evaluate_generator,
    format_table,
    load_generator,
    name_checkpoints,
    read_references,
)
from fairseq_maligan.metrics import ReferenceBLEU
from fairseq_maligan.oracle import Oracle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_arguments(parser)
    parser.add_argument("--oracle", help="oracle.pt of synthetic data: NLL-oracle")
    parser.add_argument("--references", help="reference text, one sentence a line: BLEU")
    parser.add_argument("--num-samples", type=positive_int, default=1000)
    parser.add_argument("--orders", type=positive_int, nargs="+", default=[2, 3, 4, 5],
                        help="max n-gram orders of BLEU and self-BLEU")
    add_bleu_arguments(parser)
    parser.add_argument("--temperature", type=positive_float, default=1.0)
    parser.add_argument("--max-len", type=positive_int, default=50,
                        help="tokens per sample, at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=output_file, help="JSON file for the results")
    args = parser.parse_args()
    logging.disable(logging.INFO)

    checkpoints = name_checkpoints(args.path, args.name)
    oracle = Oracle.load(args.oracle, "--oracle") if args.oracle else None
    bleus = None
    if args.references:
        references = read_references(args.references)
        bleus = {order: ReferenceBLEU(references, order, args.tokenize) for order in args.orders}
    results = []
    for name, path in checkpoints.items():
        model, task = load_generator(path, args.data)
        metrics = evaluate_generator(
            model, task, num_samples=args.num_samples, max_len=args.max_len,
            temperature=args.temperature, seed=args.seed, split=args.split,
            oracle=oracle, bleus=bleus, self_bleu_samples=args.self_bleu_samples,
        )
        results.append({"name": name, **metrics})

    print(f"{args.num_samples} samples each at temperature {args.temperature:g}; "
          "NLLs in nats per token, perplexity = exp(nll_test)")
    print(format_table(results, BLEU_SETTINGS))
    if args.output:
        settings = {k: v for k, v in vars(args).items() if k not in ("name", "output")}
        with open(args.output, "w") as out:
            json.dump({
                "settings": settings,
                "units": {"nll": "nats per token", "perplexity": "exp(nll_test), base e",
                          "bleu": "0..1, NLTK sentence_bleu with method1 smoothing, mean over "
                                  "samples; self_bleu{n} uses max n-gram order n"},
                "checkpoints": checkpoints,
                "results": results,
            }, out, indent=2)


if __name__ == "__main__":
    install_excepthook()
    main()
