"""Build a synthetic oracle (a seeded random LSTM LM) and sample train/valid/test text.

    python scripts/make_oracle_data.py --out data/oracle --vocab-size 5000 --seq-len 20 \
        --train 10000 --valid 1000 --test 1000

Writes ``oracle.pt`` (for ``--oracle-path``) and ``{train,valid,test}.txt``, one
sequence of ``w<id>`` symbols per line, ready for ``fairseq-preprocess --only-source``.
"""

import argparse
import os

import torch

from fairseq_maligan.errors import install_excepthook, output_dir, positive_int
from fairseq_maligan.oracle import Oracle, oracle_symbol


def write_split(oracle: Oracle, path: str, count: int, generator: torch.Generator) -> None:
    ids = oracle.sample(count, generator)
    with open(path, "w") as out:
        for row in ids.tolist():
            out.write(" ".join(oracle_symbol(i) for i in row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=output_dir, required=True,
                        help="output folder, created with its parents if missing")
    parser.add_argument("--vocab-size", type=positive_int, default=5000)
    parser.add_argument("--seq-len", type=positive_int, default=20)
    parser.add_argument("--embed-dim", type=positive_int, default=32)
    parser.add_argument("--hidden-dim", type=positive_int, default=32)
    parser.add_argument("--train", type=positive_int, default=10000)
    parser.add_argument("--valid", type=positive_int, default=1000)
    parser.add_argument("--test", type=positive_int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    oracle = Oracle(args.vocab_size, args.seq_len, args.embed_dim, args.hidden_dim, args.seed)
    oracle.save(os.path.join(args.out, "oracle.pt"))
    generator = torch.Generator().manual_seed(args.seed + 1)
    for split in ("train", "valid", "test"):
        write_split(oracle, os.path.join(args.out, f"{split}.txt"), getattr(args, split), generator)
    print(f"oracle and {args.train}/{args.valid}/{args.test} sequences in {args.out}")


if __name__ == "__main__":
    install_excepthook()
    main()
