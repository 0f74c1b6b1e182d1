"""Write sentences sampled from a trained language-model generator, one per line.

    python scripts/sample.py --path CKPT [--data DIR] --num 100 --max-len 50 \\
        --temperature 1.0 --seed 1 [--output FILE]

Any ``fairseq-train`` language model (``lstm_lm``, ``transformer_lm``, MLE or adversarial)
decodes freely from ``</s>``: tokens come from ``softmax(logits / temperature)``, padding and
BOS excluded, until EOS or ``--max-len`` tokens. Lines are the dictionary's symbols joined
by spaces (BPE is left as is); an empty line is a sample that ended at once. ``--data``
replaces the data directory recorded in the checkpoint (where ``dict.txt`` is). Without
``--output`` the sentences go to stdout.

Translation (encoder-decoder) models need a source sentence; sample them with stock fairseq:

    fairseq-generate DATA --path CKPT --gen-subset test --sampling --beam 1 --nbest 1 \\
        --temperature 1.0 --seed 1        # a binarised split of sources
    fairseq-interactive DATA --path CKPT --source-lang de --target-lang en \\
        --sampling --beam 1 --temperature 1.0 < sources.txt   # raw sources on stdin

(``--sampling-topk`` / ``--sampling-topp`` restrict the distribution there.)
"""

import argparse
import logging
import sys

from fairseq_maligan.errors import (
    existing_dir,
    install_excepthook,
    output_file,
    positive_float,
    positive_int,
)
from fairseq_maligan.evaluation import detokenize, load_generator, sample_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="generator checkpoint")
    parser.add_argument("--data", type=existing_dir,
                        help="data directory (default: the checkpoint's)")
    parser.add_argument("--num", type=positive_int, default=100, help="number of sentences")
    parser.add_argument("--max-len", type=positive_int, default=50,
                        help="tokens per sentence, at most")
    parser.add_argument("--temperature", type=positive_float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=output_file, help="output file (default: stdout)")
    args = parser.parse_args()
    logging.disable(logging.INFO)

    model, task = load_generator(args.path, args.data)
    rows = sample_rows(model, args.num, args.max_len, args.temperature, args.seed)
    text = "".join(line + "\n" for line in detokenize(rows, task.target_dictionary))
    if args.output is None:
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as out:
            out.write(text)


if __name__ == "__main__":
    install_excepthook()
    main()
