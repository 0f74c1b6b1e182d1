"""Pretrain a discriminator on real data versus samples of a given generator.

    python scripts/pretrain_discriminator.py DATA --generator mle.pt --updates 500 \
        --disc-arch rnn_discriminator --output disc.pt
    fairseq-train DATA --user-dir fairseq_maligan ... --disc-path disc.pt

Real rows are batches of the binarised ``train`` split; fake rows are free-running
samples of the generator (``--prefix-len`` > 0 clamps a prefix from the real row, as the
criteria do), up to the task's target length limit, and both pass through
``format_rows`` as in training. The loss is the criteria's own ``discriminator_bce``;
every ``--valid-interval`` updates D is scored on the ``valid`` split (its real rows
against samples drawn with a fixed seed), and the D with the lowest valid loss is the
one written: on a small corpus D memorises the training rows long before its train loss
stops falling, and only the valid split says whether it tells real from generated rows
it has not seen. ``--patience`` stops after that many scores without a better one. The
file loads with torch's safe loading.
"""

import argparse
import copy
import logging
import math

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass

from fairseq_maligan.criterions import max_target_positions
from fairseq_maligan.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    discriminator_bce,
    save_discriminator,
)
from fairseq_maligan.errors import (
    existing_dir,
    install_excepthook,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
)
from fairseq_maligan.evaluation import (
    discriminator_logits,
    discriminator_score,
    load_generator,
    split_batches,
)
from fairseq_maligan.sampling import is_encoder_decoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=existing_dir)
    parser.add_argument("--generator", required=True, help="generator checkpoint")
    parser.add_argument("--output", type=output_file, required=True)
    gen_parser_from_dataclass(parser, DiscriminatorConfig())
    parser.add_argument("--prefix-len", type=non_negative_int, default=0)
    parser.add_argument("--sample-max-len", type=positive_int, default=None,
                        help="length limit of samples (default: the task's target limit)")
    parser.add_argument("--updates", type=positive_int, default=500)
    parser.add_argument("--valid-interval", type=positive_int, default=250,
                        help="score D on the valid split every this many updates")
    parser.add_argument("--patience", type=non_negative_int, default=0,
                        help="stop after this many valid scores without a lower loss "
                             "(0: run all --updates)")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--max-tokens", type=positive_int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    torch.manual_seed(args.seed)

    generator, task = load_generator(args.generator, args.data, "--generator")
    max_len = args.sample_max_len or max_target_positions(task)
    cfg = DiscriminatorConfig(**{name: getattr(args, name)
                                 for name in DiscriminatorConfig.__dataclass_fields__
                                 if name != "_name"})
    disc = Discriminator(cfg, task.target_dictionary, task.source_dictionary,
                         conditional=is_encoder_decoder(generator))
    optimizer = torch.optim.Adam(disc.parameters(), lr=args.lr)
    disc.train()
    best = (math.inf, 0.0, 0)  # valid loss, valid accuracy, update
    best_state = copy.deepcopy(disc.state_dict())
    since_best = 0
    train = split_batches(task, "train", args.max_tokens, args.seed)
    for update, sample in zip(range(1, args.updates + 1), train):
        loss = discriminator_bce(*discriminator_logits(disc, generator, sample,
                                                       args.prefix_len, max_len))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update % 50 == 0 or update == args.updates:
            print(f"update {update}: discriminator loss {loss.item():.4f}", flush=True)
        if update % args.valid_interval == 0 or update == args.updates:
            valid_loss, accuracy = discriminator_score(
                disc, generator, task, "valid", args.max_tokens, args.seed, max_len,
                args.prefix_len)
            print(f"update {update}: valid loss {valid_loss:.4f}, accuracy {accuracy:.3f}",
                  flush=True)
            if valid_loss < best[0]:
                best, since_best = (valid_loss, accuracy, update), 0
                best_state = copy.deepcopy(disc.state_dict())
            else:
                since_best += 1
            if args.patience and since_best >= args.patience:
                print(f"no lower valid loss in {since_best} scores: stopping", flush=True)
                break

    disc.load_state_dict(best_state)
    disc.eval()
    save_discriminator(disc, args.output)
    print(f"valid accuracy (real and generated rows) {best[1]:.3f}, valid loss {best[0]:.4f} "
          f"(best, update {best[2]}); wrote {args.output}")


if __name__ == "__main__":
    install_excepthook()
    main()
