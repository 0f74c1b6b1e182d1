"""maligan_rollout and seqgan: Q values, the update by hand, reward alignment, batching."""

import math

import pytest
import torch
from conftest import TINY_LSTM, TINY_TRANSFORMER, build, first_batch
from test_maligan_mixed import FakeTask, unigram_setup

import fairseq_maligan.criterions as criterions
from fairseq_maligan.sampling import rollout_scores, sample_continuations


def onehot_minus_probs(theta, token):
    probs = torch.softmax(theta.detach(), 0)
    return torch.nn.functional.one_hot(torch.tensor(token), theta.numel()).float() - probs


def make_rollout_criterion(kind, **options):
    dictionary, model, _ = unigram_setup()
    config_class = criterions.SeqGANConfig if kind == "seqgan" else criterions.RolloutConfig
    criterion_class = (
        criterions.SeqGANCriterion if kind == "seqgan" else criterions.MaliganRolloutCriterion
    )
    cfg = config_class(**options)
    return dictionary, model, criterion_class(cfg, FakeTask(dictionary))


def test_maligan_rollout_update_by_hand(monkeypatch):
    dictionary, model, criterion = make_rollout_criterion(
        "maligan_rollout", num_samples=2, rollouts=2, prefix_init=1, prefix_decay=0,
        mle_weight=1.0,
    )
    a, b, c = (dictionary.index(s) for s in "abc")
    eos, pad = dictionary.eos(), dictionary.pad()
    target = torch.tensor([[a, b, eos]])
    sample = {"net_input": {"src_tokens": torch.tensor([[eos, a, b]]),
                            "src_lengths": torch.tensor([3])},
              "target": target, "ntokens": 3}
    rows = torch.tensor([[a, c, eos], [a, eos, pad]])
    # Rollout logits (rows, L, R): Q_it = mean_r exp(logit).
    values = torch.tensor([
        [[0.0, 0.0], [0.0, math.log(3.0)], [math.log(2.0), math.log(2.0)]],
        [[0.0, 0.0], [math.log(0.5), math.log(0.5)], [0.0, 0.0]],
    ])
    monkeypatch.setattr(criterions, "sample_continuations", lambda *args, **kw: rows)
    monkeypatch.setattr(criterions, "rollout_scores", lambda *args, **kw: values)
    monkeypatch.setattr(criterion, "discriminate",
                        lambda sample, tokens, order: torch.zeros(tokens.size(0)))
    model.train()
    loss, _, _ = criterion(model, sample)
    loss.backward()
    # Q by hand: row 0: t=1 -> (1 + 3) / 2 = 2, t=2 -> 2; row 1: t=1 -> 0.5.
    # sum_i L_i = 3 sampled tokens, m = 2, sum Q = 4.5: weights = Q * 3 / (2 * 4.5).
    theta = model.decoder.theta
    scale = 3 / (2 * 4.5)
    expected = -scale * (2 * onehot_minus_probs(theta, c) + 2 * onehot_minus_probs(theta, eos)
                         + 0.5 * onehot_minus_probs(theta, eos))
    expected -= onehot_minus_probs(theta, a)  # MLE on the clamped prefix "a"
    assert torch.allclose(theta.grad, expected, atol=1e-5)


def test_seqgan_rewards_align_with_step_and_row(monkeypatch):
    """D rewards token "a" at position 1 only: Q jumps exactly at the step that emits it."""
    dictionary, model, criterion = make_rollout_criterion("seqgan", num_samples=1, rollouts=64)
    a, b, c = (dictionary.index(s) for s in "abc")
    eos, pad = dictionary.eos(), dictionary.pad()
    target = torch.tensor([[b, b, b, eos], [c, c, eos, pad]])
    sample = {"net_input": {"src_tokens": torch.tensor([[eos, b, b, b], [eos, c, c, eos]]),
                            "src_lengths": torch.tensor([4, 3])},
              "target": target, "ntokens": 7}
    rows = torch.tensor([[c, a, b, eos], [b, c, eos, pad]])  # row 0 has "a" at 1, row 1 not

    def reward_a_at_1(sample, tokens, order):
        return torch.where(tokens[:, 1] == a, 4.0, -4.0)

    recorded = {}

    def recording_rollouts(*args, **kwargs):
        recorded["values"] = rollout_scores(*args, **kwargs)
        return recorded["values"]

    monkeypatch.setattr(criterions, "sample_continuations", lambda *args, **kw: rows)
    monkeypatch.setattr(criterions, "rollout_scores", recording_rollouts)
    monkeypatch.setattr(criterion, "discriminate", reward_a_at_1)
    torch.manual_seed(0)
    model.train()
    loss, _, _ = criterion(model, sample)
    loss.backward()

    q = torch.sigmoid(recorded["values"]).mean(dim=2)
    high, low = torch.sigmoid(torch.tensor(4.0)), torch.sigmoid(torch.tensor(-4.0))
    assert torch.allclose(q[0, 1:], high.expand(3))      # "a" chosen at t = 1: certain reward
    assert torch.allclose(q[1, 1:3], low.expand(2))      # row 1 picked "c" at t = 1
    p_a = torch.softmax(model.decoder.theta.detach(), 0)[a]
    expected_q0 = p_a * high + (1 - p_a) * low           # t = 0: "a" still to be drawn
    assert abs(q[0, 0] - expected_q0) < 0.15 and abs(q[1, 0] - expected_q0) < 0.15
    theta = model.decoder.theta
    expected = -sum(q[i, t] * onehot_minus_probs(theta, int(rows[i, t]))
                    for i in range(2) for t in range(4) if rows[i, t] != pad)
    assert torch.allclose(theta.grad, expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["transformer_lm", "lstm_lm"])
@pytest.mark.parametrize("start", [0, 3])
@pytest.mark.parametrize("max_rows", [36, 8192])
def test_batched_rollouts_equal_naive_loop(lm_data, arch, start, max_rows):
    torch.manual_seed(0)
    extra = TINY_TRANSFORMER if arch == "transformer_lm" else TINY_LSTM
    _, task, model, _ = build(lm_data, extra + ["--criterion", "cross_entropy"])
    sample = first_batch(task, max_sentences=3)
    rows = sample_continuations(model, sample, start, 2, 12,
                                generator=torch.Generator().manual_seed(1))
    order = torch.arange(3).repeat_interleave(2)
    positions = torch.arange(1, 17)

    def score(tokens, batch_order):
        width = tokens.size(1)
        return (tokens.float() * positions[:width]).sum(1) / 100 + batch_order

    fast = rollout_scores(model, sample, rows, order, start, 3, score, 16,
                          generator=torch.Generator().manual_seed(5), max_rows=max_rows)
    slow = rollout_scores(model, sample, rows, order, start, 3, score, 16, max_rows=max_rows,
                          generator=torch.Generator().manual_seed(5), recompute_prefix=True)
    assert torch.equal(fast, slow)
    assert fast[:, :start].abs().sum() == 0 and fast[:, start].abs().sum() > 0


@pytest.mark.parametrize("arch", ["transformer_lm", "lstm_lm"])
@pytest.mark.parametrize("max_rows", [1, 40, 10_000])
def test_rollouts_complete_their_own_prefix(lm_data, arch, max_rows):
    """However start steps are grouped into batches, the completions scored for step t
    of row i begin with row i's first t + 1 tokens, end well (EOS, then padding), and
    land in values[i, t]; rows that already ended complete as themselves."""
    torch.manual_seed(0)
    extra = TINY_TRANSFORMER if arch == "transformer_lm" else TINY_LSTM
    _, task, model, _ = build(lm_data, extra + ["--criterion", "cross_entropy"])
    sample = first_batch(task, max_sentences=3)
    rows = sample_continuations(model, sample, 0, 2, 12,
                                generator=torch.Generator().manual_seed(1))
    count, width = rows.shape
    max_len = width + 3
    order = torch.arange(3).repeat_interleave(2)
    eos, pad = model.decoder.dictionary.eos(), model.decoder.dictionary.pad()
    scored = []

    def score(tokens, batch_order):
        scored.append((tokens, batch_order))
        return torch.arange(tokens.size(0), dtype=torch.float) + 1000 * len(scored)

    start, rollouts = 1, 3
    values = rollout_scores(model, sample, rows, order, start, rollouts, score, max_len,
                            generator=torch.Generator().manual_seed(2), max_rows=max_rows)
    tokens = torch.cat([t for t, _ in scored])
    per_step = count * rollouts
    assert torch.equal(torch.cat([o for _, o in scored]),
                       order.repeat_interleave(rollouts).repeat(tokens.size(0) // per_step))
    ended = torch.cumsum(rows.eq(eos) | rows.eq(pad), dim=1).gt(0)
    steps = [t for t in range(start, width) if not ended[:, t - 1].all()]
    assert tokens.shape == (len(steps) * count * rollouts, max_len)
    assert len(scored) == math.ceil(len(steps) / max(1, max_rows // per_step))  # 18 rows/step
    for k, t in enumerate(steps):
        block = tokens[k * per_step:(k + 1) * per_step].view(count, rollouts, -1)
        assert torch.equal(block[:, :, : t + 1], rows[:, None, : t + 1].expand(-1, rollouts, -1))
        for i in range(count):
            for completion in block[i]:
                ends = completion.eq(eos).nonzero()
                assert ends.numel() == 1 or not completion.eq(pad).any()
                if ends.numel():
                    assert completion[ends[0, 0] + 1:].eq(pad).all()
            if ended[i, t]:
                assert (block[i, :, :width] == rows[i]).all() and block[i, :, width:].eq(pad).all()
    flat = torch.cat([score_values for score_values in
                      (torch.arange(t.size(0), dtype=torch.float) + 1000 * (n + 1)
                       for n, (t, _) in enumerate(scored))])
    expected = flat.view(len(steps), count, rollouts).transpose(0, 1)
    assert torch.equal(values[:, steps], expected)
    assert values[:, :start].abs().sum() == 0 and values[:, steps[-1] + 1:].abs().sum() == 0


def at_update(criterion, model, update):
    """What the trainer does before each step's forward: the update number, the copies."""
    criterion.begin_update(update)
    criterion.refresh_copies(model)
    return criterion.rollout_policy(model)


def test_seqgan_policy_is_delayed_copy_and_survives_reload():
    _, model, criterion = make_rollout_criterion("seqgan", rollout_refresh_updates=3)
    theta = model.decoder.theta
    policy = at_update(criterion, model, 0)
    with torch.no_grad():
        theta.add_(1.0)
    assert torch.equal(at_update(criterion, model, 1).decoder.theta, theta - 1.0)
    assert torch.equal(at_update(criterion, model, 3).decoder.theta, theta)
    saved = criterion.state_dict()
    assert torch.equal(saved["policy.decoder.theta"], theta)

    _, model2, fresh = make_rollout_criterion("seqgan", rollout_refresh_updates=3)
    fresh.load_state_dict(saved)
    assert torch.equal(at_update(fresh, model2, 4).decoder.theta, theta)
    assert not policy.decoder.theta.requires_grad


@pytest.mark.parametrize("disc_steps, refresh", [(1, 1), (2, 2), (3, 3), (2, 4), (3, 2)])
def test_seqgan_policy_refreshes_every_u_updates_whatever_the_phases(disc_steps, refresh):
    """beta <- theta at every multiple of U, also when the generator does not move then
    (the old rule, "only on generator updates", never refreshed with k = U = 2)."""
    _, model, criterion = make_rollout_criterion(
        "seqgan", rollout_refresh_updates=refresh, disc_steps=disc_steps)
    theta = model.decoder.theta
    refreshed = []
    for update in range(12):
        with torch.no_grad():
            theta.add_(1.0)
        beta = at_update(criterion, model, update).decoder.theta
        if torch.equal(beta, theta):
            refreshed.append(update)
    assert refreshed == list(range(0, 12, refresh))


def test_seqgan_ema_policy():
    _, model, criterion = make_rollout_criterion("seqgan", rollout_ema=0.75)
    theta = model.decoder.theta
    start = theta.detach().clone()
    at_update(criterion, model, 0)
    with torch.no_grad():
        theta.add_(4.0)
    beta = at_update(criterion, model, 1).decoder.theta
    assert torch.allclose(beta, 0.75 * start + 0.25 * (start + 4.0))
    at_update(criterion, model, 1)  # a second forward in the same update changes nothing
    assert torch.allclose(beta, 0.75 * start + 0.25 * (start + 4.0))
