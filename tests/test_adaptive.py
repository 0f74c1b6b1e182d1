"""Adaptive input and softmax (fairseq's wiki103 LMs) sample, rescore and train correctly.

The decoder of such a model outputs features, not logits: reading them as logits (the
old sampler) drew tokens only from ids below the feature size, and fairseq's
``get_log_prob`` builds its result in place, which autograd refuses in a training step.
"""

import pytest
import torch
from conftest import build, first_batch

from fairseq_maligan.evaluation import nll_test
from fairseq_maligan.sampling import (
    adaptive_softmax,
    decoder_inputs,
    sample_continuations,
    token_log_probs,
)

ADAPTIVE = [
    "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
    "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--adaptive-input",
    "--adaptive-input-cutoff", "12,24", "--adaptive-softmax-cutoff", "12,24",
    "--tie-adaptive-weights", "--adaptive-input-factor", "2", "--adaptive-softmax-factor", "2",
    "--decoder-input-dim", "16", "--decoder-output-dim", "16", "--dropout", "0",
]
CRITERIA = {
    "maligan_mixed": [],
    "maligan_rollout": ["--rollouts", "2"],
    "seqgan": ["--rollouts", "2"],
}


def build_adaptive(lm_data, criterion: str = "cross_entropy", extra=()):
    torch.manual_seed(0)
    return build(lm_data, [*ADAPTIVE, "--criterion", criterion, *extra])


def test_rescoring_equals_the_models_own_distribution(lm_data):
    _, task, model, _ = build_adaptive(lm_data)
    assert adaptive_softmax(model) is not None
    sample = first_batch(task)
    model.eval()
    rows = sample_continuations(model, sample, 2, 3, 16, generator=torch.Generator().manual_seed(1))
    order = torch.arange(sample["target"].size(0)).repeat_interleave(3)
    picked = token_log_probs(model, sample, rows, order)
    with torch.no_grad():
        full = model.get_normalized_probs(model(decoder_inputs(model, sample, rows, order)),
                                          log_probs=True)
    expected = full.gather(-1, rows.unsqueeze(-1)).squeeze(-1)
    mask = rows.ne(task.target_dictionary.pad())
    assert torch.allclose(picked[mask], expected[mask], atol=1e-5)
    model.train()


def test_samples_cover_the_vocabulary(lm_data):
    """Tokens beyond the feature size (16) and in both tail clusters are drawn."""
    _, task, model, _ = build_adaptive(lm_data)
    dictionary = task.target_dictionary
    train = task.dataset("train")
    counts = torch.bincount(torch.cat([train[i]["target"] for i in range(len(train))]),
                            minlength=len(dictionary))
    frequent = set(torch.nonzero(counts >= 20).squeeze(1).tolist()) - {dictionary.eos()}
    assert len(frequent) > 20 and max(frequent) >= 24
    batch = first_batch(task, max_sentences=4)
    rows = sample_continuations(model, batch, 0, 500, 16,
                                generator=torch.Generator().manual_seed(0))
    drawn = set(rows.unique().tolist())
    assert len(frequent & drawn) > 0.9 * len(frequent)


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
def test_every_criterion_fine_tunes_an_adaptive_model(lm_data, criterion):
    _, task, model, crit = build_adaptive(lm_data, criterion, [
        "--prefix-init", "2", "--prefix-decay", "0", "--num-samples", "2",
        "--disc-embed-dim", "8", "--disc-hidden-dim", "8", *CRITERIA[criterion],
    ])
    sample = first_batch(task)
    tails = [p for n, p in model.named_parameters() if "adaptive_softmax.tail" in n]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam([*model.parameters(), *crit.parameters()], lr=1e-2)
    model.train()
    for update in range(3):
        crit.begin_update(update)
        loss, _, log = crit(model, sample)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and log["adv_loss"] != 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tails)
        optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())
               if a.requires_grad)
    assert torch.isfinite(torch.tensor(nll_test(model.eval(), task, "valid")))


def test_mle_term_is_the_models_nll_and_trains(lm_data):
    """With N covering every row the step is plain MLE: its loss is the batch's NLL under
    the model's full distribution (what stock ``fairseq-eval-lm`` scores), and its
    backward goes through (fairseq's ``get_log_prob`` writes into its own log-softmax
    output, which autograd refuses). Stock ``adaptive_loss`` is not the reference: it
    passes tail-relative targets to ``ignore_index=pad``, so it drops the tail term of
    the second token of every tail cluster."""
    _, task, model, crit = build_adaptive(lm_data, "maligan_mixed", [
        "--prefix-init", "32", "--prefix-decay", "0", "--num-samples", "2",
        "--disc-embed-dim", "8", "--disc-hidden-dim", "8",
    ])
    sample = first_batch(task)
    assert sample["target"].size(1) < 32
    model.train()
    crit.begin_update(0)
    loss, sample_size, log = crit(model, sample)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    target = sample["target"]
    with torch.no_grad():
        full = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    picked = full.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    nll = -picked[target.ne(task.target_dictionary.pad())].sum()
    assert sample_size == int(target.ne(task.target_dictionary.pad()).sum())
    assert log["mle_loss"].item() == pytest.approx(nll.item(), rel=1e-5)
    assert log["loss"].item() == pytest.approx(nll.item(), rel=1e-5)  # mle weight 1
