"""Pretrain a discriminator on real data versus samples of a given generator.

    python scripts/pretrain_discriminator.py DATA --generator mle.pt --updates 500 \
        --disc-arch rnn_discriminator --output disc.pt
    fairseq-train DATA --user-dir fairseq_maligan ... --disc-path disc.pt

Real rows are batches of the binarised ``train`` split; fake rows are free-running
samples of the generator (``--prefix-len`` > 0 clamps a prefix from the real row, as the
criteria do), up to the task's target length limit, and both pass through
``format_rows`` as in training. The loss is the criteria's own ``discriminator_bce``;
the accuracy on the ``valid`` split is printed at the end. The file loads with torch's
safe loading.
"""

import argparse
import logging

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass

from fairseq_maligan.criterions import max_target_positions
from fairseq_maligan.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    discriminator_bce,
    format_rows,
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
from fairseq_maligan.evaluation import load_generator
from fairseq_maligan.sampling import is_encoder_decoder, sample_continuations


def batches(task, split: str, max_tokens: int, seed: int, epochs: int = 1000):
    """Endless shuffled batches of a split (stock fairseq batching)."""
    task.load_dataset(split)
    for epoch in range(1, epochs + 1):
        iterator = task.get_batch_iterator(
            task.dataset(split), max_tokens=max_tokens, seed=seed, epoch=epoch,
            ignore_invalid_inputs=True,
        ).next_epoch_itr(shuffle=True)
        yield from iterator


def logits(disc: Discriminator, generator, sample: dict, prefix_len: int, max_len: int):
    """D's logits on the real rows and on one generator sample per row, formatted alike."""
    with torch.no_grad():
        fake = sample_continuations(generator, sample, prefix_len, 1, max_len)
    src = sample["net_input"]["src_tokens"] if is_encoder_decoder(generator) else None
    pad = generator.decoder.dictionary.pad()
    return (disc(format_rows(sample["target"], pad, max_len), src),
            disc(format_rows(fake, pad, max_len), src))


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
    for update, sample in zip(range(1, args.updates + 1), batches(task, "train", args.max_tokens,
                                                                   args.seed)):
        loss = discriminator_bce(*logits(disc, generator, sample, args.prefix_len, max_len))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update % 50 == 0 or update == args.updates:
            print(f"update {update}: discriminator loss {float(loss):.4f}", flush=True)

    disc.eval()
    correct = total = 0
    with torch.no_grad():
        for sample in batches(task, "valid", args.max_tokens, args.seed, epochs=1):
            real, fake = logits(disc, generator, sample, args.prefix_len, max_len)
            correct += int(real.gt(0).sum()) + int(fake.le(0).sum())
            total += real.numel() + fake.numel()
    save_discriminator(disc, args.output)
    print(f"valid accuracy (real and generated rows) {correct / max(total, 1):.3f}; "
          f"wrote {args.output}")


if __name__ == "__main__":
    install_excepthook()
    main()
