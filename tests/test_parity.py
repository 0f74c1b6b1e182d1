"""The discriminator judges content only: a perfect generator leaves it at chance.

The "perfect generator" is the data's own source, a fixed bigram chain with a stop
probability, wrapped as a fairseq language model: its samples have the data
distribution exactly, lengths included. Real rows are batched by fairseq as in training
(similar lengths together), which is what made the old length cap (the batch's widest
target) cut long samples before EOS and gave D a format cue.
"""

import pytest
import torch
from conftest import LM_DATA, TINY_TRANSFORMER, build, run_cli
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel

from fairseq_maligan.discriminators import Discriminator, DiscriminatorConfig, format_rows
from fairseq_maligan.sampling import training_mode

VOCAB, STOP, LIMIT = 12, 0.15, 64


def chain(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Start distribution and word-to-word transitions of the data's bigram chain."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.softmax(torch.randn(VOCAB, generator=generator) * 2, 0)
    transitions = torch.softmax(torch.randn(VOCAB, VOCAB, generator=generator) * 2, 1)
    return start, transitions


def write_corpus(path, count: int, seed: int) -> None:
    start, transitions = chain()
    generator = torch.Generator().manual_seed(seed)
    lines = []
    while len(lines) < count:
        words = [int(torch.multinomial(start, 1, generator=generator))]
        while torch.rand(1, generator=generator) > STOP:
            words.append(int(torch.multinomial(transitions[words[-1]], 1, generator=generator)))
        if len(words) < LIMIT:  # rows of LIMIT tokens or more are too rare to matter (~1e-5)
            lines.append(" ".join(f"w{w}" for w in words))
    path.write_text("\n".join(lines) + "\n")


class ChainDecoder(FairseqIncrementalDecoder):
    """The data's chain over a fairseq dictionary: p(x_t | x_<t) depends on x_{t-1} only."""

    def __init__(self, dictionary):
        super().__init__(dictionary)
        start, transitions = chain()
        table = torch.full((len(dictionary), len(dictionary)), float("-inf"))
        words = [dictionary.index(f"w{w}") for w in range(VOCAB)]
        eos = dictionary.eos()
        table[eos, words] = start.log()
        for i, word in enumerate(words):
            table[word, words] = (transitions[i] * (1 - STOP)).log()
            table[word, eos] = torch.tensor(STOP).log()
        self.register_buffer("table", table)

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        if incremental_state is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
        return self.table[prev_output_tokens], None

    def reorder_incremental_state(self, incremental_state, new_order):
        pass


@pytest.fixture(scope="module")
def chain_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    for split, count, seed in (("train", 3000, 1), ("valid", 1500, 2)):
        write_corpus(out / f"{split}.txt", count, seed)
    run_cli("preprocess", [
        "--only-source", "--trainpref", str(out / "train.txt"),
        "--validpref", str(out / "valid.txt"), "--destdir", str(out / "bin"), "--workers", "1",
    ])
    return out / "bin"


def batches(task, split: str, epochs: int):
    task.load_dataset(split)
    for epoch in range(1, epochs + 1):
        yield from task.get_batch_iterator(
            task.dataset(split), max_tokens=240, seed=1, epoch=epoch,
        ).next_epoch_itr(shuffle=True)


@pytest.mark.parametrize("arch", ["rnn_discriminator", "cnn_discriminator"])
def test_perfect_generator_leaves_discriminator_at_chance(chain_data, arch):
    torch.manual_seed(0)
    _, task, _, criterion = build(chain_data, [
        *TINY_TRANSFORMER, "--criterion", "maligan_mixed", "--prefix-init", "0",
        "--prefix-decay", "0", "--disc-arch", arch, "--disc-embed-dim", "16",
        "--disc-hidden-dim", "16", "--disc-dropout", "0", "--tokens-per-sample", str(LIMIT),
    ])
    generator = FairseqLanguageModel(ChainDecoder(task.target_dictionary))
    optimizer = torch.optim.Adam(criterion.discriminator.parameters(), lr=3e-3)
    updates = 0
    for sample in batches(task, "train", epochs=10):
        loss, _ = criterion.score(sample, criterion.generate(generator, sample, 0, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        updates += 1
        if updates == 300:
            break
    assert updates == 300

    totals: dict[str, float] = {}
    with torch.no_grad(), training_mode(criterion.discriminator, False):
        for sample in batches(task, "valid", epochs=2):
            _, stats = criterion.score(sample, criterion.generate(generator, sample, 0, 1))
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + float(value)
    rows = totals["disc_real_rows"] + totals["disc_fake_rows"]
    accuracy = (totals["disc_correct_real"] + totals["disc_correct_fake"]) / rows
    assert rows > 2500
    assert abs(accuracy - 0.5) < 0.05, accuracy
    assert totals["real_eos"] == totals["disc_real_rows"]
    assert totals["fake_eos"] / totals["disc_fake_rows"] > 0.995
    assert totals["fake_clipped"] / totals["disc_fake_rows"] < 0.005
    assert totals["real_clipped"] == 0
    real_len = totals["real_len"] / totals["disc_real_rows"]
    fake_len = totals["fake_len"] / totals["disc_fake_rows"]
    assert abs(real_len - fake_len) < 0.1 * real_len  # ~4 standard errors; a cap cuts ~30 %


@pytest.mark.parametrize("arch", ["rnn_discriminator", "cnn_discriminator"])
@pytest.mark.parametrize("conditional", [False, True])
def test_discriminator_logit_ignores_trailing_padding(lm_data, arch, conditional):
    _, task, _, _ = build(lm_data, [*TINY_TRANSFORMER, "--criterion", "cross_entropy"])
    dictionary = task.target_dictionary
    cfg = DiscriminatorConfig(disc_arch=arch, disc_embed_dim=8, disc_hidden_dim=8,
                              disc_filter_sizes="2,3,5")
    disc = Discriminator(cfg, dictionary, dictionary, conditional).eval()
    pad, eos = dictionary.pad(), dictionary.eos()
    words = torch.arange(dictionary.nspecial, dictionary.nspecial + 7)
    rows = torch.full((4, 8), pad)
    for i, length in enumerate((1, 2, 4, 7)):  # shorter and longer than the filters
        rows[i, :length] = words[:length]
        rows[i, length] = eos
    source = torch.randint(dictionary.nspecial, len(dictionary), (4, 5))
    reference = disc(rows, source)
    for extra in range(11):
        padded = torch.nn.functional.pad(rows, (0, extra), value=pad)
        assert torch.allclose(disc(padded, source), reference, atol=1e-6), extra
        single = [disc(padded[i:i + 1, : 2 + i * 2 + extra], source[i:i + 1]) for i in range(4)]
        assert torch.allclose(torch.cat(single), reference, atol=1e-6)


def test_rows_cut_at_the_cap_look_alike(lm_data):
    """A real row longer than the cap is cut where a sample would be, without EOS."""
    _, _, _, criterion = build(lm_data, [
        *TINY_TRANSFORMER, "--criterion", "maligan_mixed", "--sample-max-len", "5", *LM_DATA,
    ])
    pad, eos = criterion.padding_idx, criterion.eos_idx
    real = torch.tensor([[7, 8, 9, 10, 11, 12, eos], [7, 8, eos, pad, pad, pad, pad]])
    sampled = torch.tensor([[7, 8, 9, 10, 11], [7, 8, eos, pad, pad]])
    assert torch.equal(format_rows(real, pad, criterion.max_len), sampled)
    stats = criterion.row_statistics(torch.zeros(2), format_rows(real, pad, 5), "real")
    assert int(stats["real_clipped"]) == 1 and int(stats["real_eos"]) == 1
    assert format_rows(torch.tensor([[7, eos, pad, pad]]), pad, 5).shape == (1, 2)
