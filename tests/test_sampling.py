"""The sampler: prefix clamping, incremental == naive given the same draws, frequencies."""

import pytest
import torch
from conftest import TINY_LSTM, TINY_TRANSFORMER, build, first_batch

from fairseq_maligan.sampling import (
    banned_tokens,
    draw_tokens,
    first_decoder_input,
    sample_continuations,
)

ARCHS = {"transformer_lm": TINY_TRANSFORMER, "lstm_lm": TINY_LSTM}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def lm(request, lm_data):
    torch.manual_seed(0)
    _, task, model, _ = build(lm_data, ARCHS[request.param] + ["--criterion", "cross_entropy"])
    return model, first_batch(task)


@pytest.mark.parametrize("prefix_len", [0, 3, 8])
def test_prefix_is_clamped_from_target(lm, prefix_len):
    model, sample = lm
    rows = sample_continuations(model, sample, prefix_len, num_samples=3, max_len=16)
    target = sample["target"]
    order = torch.arange(target.size(0)).repeat_interleave(3)
    width = min(prefix_len, rows.size(1))
    assert torch.equal(rows[:, :width], target[order, :width])
    pad, eos = model.decoder.dictionary.pad(), model.decoder.dictionary.eos()
    for row in rows.tolist():
        if eos in row:
            assert all(token == pad for token in row[row.index(eos) + 1:])


@pytest.mark.parametrize("prefix_len", [0, 4])
def test_incremental_equals_naive_recompute(lm, prefix_len):
    model, sample = lm
    fast = sample_continuations(
        model, sample, prefix_len, 4, max_len=12, generator=torch.Generator().manual_seed(3)
    )
    slow = sample_continuations(
        model, sample, prefix_len, 4, max_len=12, generator=torch.Generator().manual_seed(3),
        recompute_prefix=True,
    )
    assert fast.shape == slow.shape
    assert torch.equal(fast, slow)
    assert model.training, "the sampler must restore the model's training mode"


def test_token_frequencies_match_softmax(lm):
    model, sample = lm
    model.eval()
    one_row = {
        "net_input": {k: v[:1] for k, v in sample["net_input"].items()},
        "target": sample["target"][:1],
    }
    prefix_len, draws = 2, 40000
    with torch.no_grad():
        prefix = one_row["target"][:, :prefix_len]
        inputs = torch.cat([first_decoder_input(model, one_row), prefix], 1)
        logits = model(inputs)[0][0, -1].clone()
    logits[list(banned_tokens(model))] = float("-inf")
    expected = torch.softmax(logits, dim=-1)
    rows = sample_continuations(
        model, one_row, prefix_len, draws, max_len=prefix_len + 1,
        generator=torch.Generator().manual_seed(0),
    )
    model.train()
    counts = torch.bincount(rows[:, prefix_len], minlength=expected.numel()).float()
    observed = counts / draws
    # Binomial standard error is at most 0.0025 here; 5 sigma over ~44 symbols.
    assert (observed - expected).abs().max() < 0.0125
    assert counts[list(banned_tokens(model))].sum() == 0


def test_draw_tokens_inverse_cdf_by_hand():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    draws = (0.0, 0.09, 0.11, 0.29, 0.31, 0.59, 0.61, 0.99)
    picks = [int(draw_tokens(logits, torch.tensor([u]))) for u in draws]
    assert picks == [0, 0, 1, 1, 2, 2, 3, 3]
    banned = int(draw_tokens(logits, torch.tensor([0.0]), banned=(0,)))
    assert banned == 1
