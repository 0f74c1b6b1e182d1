"""Quality-diversity curves of generators over sampling temperatures (Caccia et al. 2018).

    python scripts/temperature_sweep.py --path CKPT [CKPT2 ...] [--name NAME ...] \\
        [--data DIR] (--oracle oracle.pt | --references test.txt) \\
        [--temperatures 0.6 0.8 1.0 1.2 1.5] [--num-samples 1000] [--max-order 5] \\
        [--tokenize nltk] [--self-bleu-samples N] \\
        [--output-json sweep.json] [--output-plot sweep.png]

Every checkpoint is sampled at every temperature (the same seed for every point):

- ``--oracle`` (synthetic data): quality = NLL-oracle of the samples, diversity axis =
  NLL-test of the binarised ``--split`` under the same temperature; nats per token,
  lower is better on both axes;
- ``--references`` (real data): quality = BLEU-``max-order`` of the samples against the
  reference text (higher is better), diversity = self-BLEU-``max-order`` of the first
  ``--self-bleu-samples`` samples (default: all; lower is more diverse): NLTK's method1
  sentence BLEU on ``--tokenize`` tokens (default ``nltk``, the Treebank tokenizer), both
  stated in every record.

Prints a table, writes the records as JSON and draws one curve per checkpoint, points
labelled with their temperature.
"""

import argparse
import json
import logging

from fairseq_maligan.errors import install_excepthook, output_file, positive_float, positive_int
from fairseq_maligan.evaluation import (
    BLEU_SETTINGS,
    add_bleu_arguments,
    add_checkpoint_arguments,
    format_table,
    name_checkpoints,
    plot_sweep,
    temperature_sweep,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_checkpoint_arguments(parser)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--oracle", help="oracle.pt of synthetic data")
    mode.add_argument("--references", help="reference text, one sentence a line")
    parser.add_argument("--temperatures", type=positive_float, nargs="+",
                        default=[0.6, 0.8, 1.0, 1.2, 1.5])
    parser.add_argument("--num-samples", type=positive_int, default=1000)
    parser.add_argument("--max-order", type=positive_int, default=5,
                        help="max n-gram order of BLEU and self-BLEU")
    add_bleu_arguments(parser)
    parser.add_argument("--max-len", type=positive_int, default=50,
                        help="tokens per sample, at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output-json", type=output_file, help="JSON file for the records")
    parser.add_argument("--output-plot", type=output_file,
                        help="image file for the curves (e.g. .png)")
    args = parser.parse_args()
    logging.disable(logging.INFO)

    records = temperature_sweep(
        name_checkpoints(args.path, args.name), args.temperatures, args.num_samples,
        oracle=args.oracle, references=args.references, data=args.data, split=args.split,
        max_order=args.max_order, max_len=args.max_len, seed=args.seed,
        tokenize=args.tokenize, self_bleu_samples=args.self_bleu_samples,
    )
    print(f"quality: {records[0]['quality_metric']}, diversity: {records[0]['diversity_metric']}")
    print(format_table([
        {k: v for k, v in r.items() if k not in ("quality_metric", "diversity_metric")}
        for r in records
    ], BLEU_SETTINGS))
    if args.output_json:
        with open(args.output_json, "w") as out:
            json.dump(records, out, indent=2)
    if args.output_plot:
        if args.oracle:
            xlabel = "NLL-oracle (nats/token; lower: better quality)"
            ylabel = "NLL-test (nats/token; lower: better coverage)"
        else:
            xlabel = f"BLEU-{args.max_order} (higher: better quality)"
            ylabel = f"self-BLEU-{args.max_order} (lower: more diverse)"
        plot_sweep(records, args.output_plot, xlabel, ylabel)


if __name__ == "__main__":
    install_excepthook()
    main()
