"""maligan_mixed: the gradient on a case worked by hand, N = T equals MLE, the schedule."""

import pytest
import torch
from conftest import TINY_TRANSFORMER, build, first_batch
from fairseq.data import Dictionary
from fairseq.models import FairseqIncrementalDecoder, FairseqLanguageModel
from fairseq.tasks.language_modeling import LanguageModelingTask

import fairseq_maligan.criterions as criterions
from fairseq_maligan.criterions import (
    effective_sample_size,
    importance_weights,
    prefix_length,
)


class UnigramDecoder(FairseqIncrementalDecoder):
    """p(x_t | x_<t) = softmax(theta) at every step: log p has a gradient known by hand."""

    def __init__(self, dictionary, logits):
        super().__init__(dictionary)
        self.theta = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, **kwargs):
        length = 1 if incremental_state is not None else prev_output_tokens.size(1)
        return self.theta.expand(prev_output_tokens.size(0), length, -1), None


class FakeTask(LanguageModelingTask):
    """A language-modelling task with a dictionary and no data."""

    def __init__(self, dictionary):
        self.dictionary = self.output_dictionary = dictionary

    def max_positions(self):
        return 16


def unigram_setup(num_samples=3, **options):
    dictionary = Dictionary()
    for symbol in "abc":
        dictionary.add_symbol(symbol)
    theta = [0.0, 0.0, 0.5, 0.0, 1.0, -0.5, 0.25]  # bos pad eos unk a b c
    model = FairseqLanguageModel(UnigramDecoder(dictionary, theta))
    cfg = criterions.MaliganMixedConfig(num_samples=num_samples, **options)
    criterion = criterions.MaliganMixedCriterion(cfg, FakeTask(dictionary))
    return dictionary, model, criterion


def test_weights_are_group_softmax_of_rD():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.0, 0.0, 5.0])
    d = torch.sigmoid(logits)
    r_d = d / (1 - d)
    by_hand = (r_d.view(2, 3) / r_d.view(2, 3).sum(1, keepdim=True))
    assert torch.allclose(importance_weights(logits, 3), by_hand, atol=1e-6)
    assert torch.allclose(effective_sample_size(by_hand), 1 / by_hand.pow(2).sum(1))
    extreme = importance_weights(torch.tensor([1000.0, 0.0, -1000.0]), 3)
    assert torch.isfinite(extreme).all() and extreme[0, 0] == 1.0


@pytest.mark.parametrize("baseline", ["uniform", "zero"])
def test_generator_gradient_matches_hand_formula(monkeypatch, baseline):
    dictionary, model, criterion = unigram_setup(
        num_samples=3, prefix_init=1, prefix_decay=0, mle_weight=0.7, baseline=baseline
    )
    a, b, c = (dictionary.index(s) for s in "abc")
    eos, pad = dictionary.eos(), dictionary.pad()
    # Row 0 (length 4) is longer than N = 1: MLE on "a", MaliGAN on 3 sampled suffixes.
    # Row 1 (length 1, only EOS) is not: it contributes MLE only.
    target = torch.tensor([[a, b, c, eos], [eos, pad, pad, pad]])
    sample = {
        "net_input": {"src_tokens": torch.tensor([[eos, a, b, c], [eos, pad, pad, pad]]),
                      "src_lengths": torch.tensor([4, 1])},
        "target": target, "ntokens": 5,
    }
    rows = torch.tensor([
        [a, b, eos, pad], [a, c, c, eos], [a, eos, pad, pad],
        [eos, pad, pad, pad], [eos, pad, pad, pad], [eos, pad, pad, pad],
    ])
    fake_logits = torch.tensor([0.5, -0.25, 1.5])
    monkeypatch.setattr(criterions, "sample_continuations", lambda *args, **kw: rows)
    monkeypatch.setattr(
        criterion, "discriminate",
        lambda sample, tokens, order: fake_logits if tokens.size(0) == 3 else torch.zeros(
            tokens.size(0), requires_grad=True),
    )
    model.train()
    criterion.train()
    loss, sample_size, log = criterion(model, sample)
    loss.backward()

    # By hand: d/dtheta log softmax(theta)[x] = onehot(x) - softmax(theta).
    probs = torch.softmax(model.decoder.theta.detach(), 0)

    def grad_log_p(tokens):
        return sum(torch.nn.functional.one_hot(torch.tensor(t), 7).float() - probs for t in tokens)

    w = torch.exp(fake_logits) / torch.exp(fake_logits).sum()
    b_value = 1 / 3 if baseline == "uniform" else 0.0
    suffixes = [[b, eos], [c, c, eos], [eos]]
    maligan = -sum((w[j] - b_value) * grad_log_p(s) for j, s in enumerate(suffixes))
    mle = -0.7 * (grad_log_p([a]) + grad_log_p([eos]))
    assert torch.allclose(model.decoder.theta.grad, maligan + mle, atol=1e-5)
    assert sample_size == 5
    assert log["prefix_len"] == 1 and int(log["disc_fake_rows"]) == 3


def test_full_prefix_gradient_equals_cross_entropy(lm_data):
    torch.manual_seed(0)
    _, task, model, criterion = build(
        lm_data, TINY_TRANSFORMER + ["--criterion", "maligan_mixed", "--dropout", "0"]
    )
    ce_cfg = build(lm_data, TINY_TRANSFORMER + ["--criterion", "cross_entropy"])[0]
    ce = task.build_criterion(ce_cfg.criterion)
    sample = first_batch(task)
    model.train()
    criterion.begin_update(0)
    loss, size, _ = criterion(model, sample)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ce_loss, ce_size, _ = ce(model, sample)
    ce_loss.backward()
    assert size == ce_size
    assert torch.allclose(loss, ce_loss)
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-6), name


@pytest.mark.parametrize(
    "update, longest, init, decay, every, floor, expected",
    [
        (0, 20, None, 5, 10, 0, 20),
        (9, 20, None, 5, 10, 0, 20),
        (10, 20, None, 5, 10, 0, 15),
        (35, 20, None, 5, 10, 0, 5),
        (1000, 20, None, 5, 10, 2, 2),
        (0, 20, 30, 5, 1, 0, 30),
        (3, 20, 30, 5, 1, 0, 15),
        (7, 40, 0, 0, 1, 0, 0),
    ],
)
def test_schedule_values(update, longest, init, decay, every, floor, expected):
    assert prefix_length(update, longest, init, decay, every, floor) == expected


def test_generator_and_discriminator_phases():
    _, _, criterion = unigram_setup(disc_steps=3, disc_warmup_updates=4)
    moves = []
    for update in range(12):
        criterion.begin_update(update)
        moves.append(criterion.generator_moves())
    assert moves == [False] * 4 + [False, False, True] * 2 + [False, False]



def test_prefix_mle_gradient_with_sampled_rows_equals_prefix_cross_entropy(lm_data, monkeypatch):
    """N < T: rows are active and sampled; the MLE part of the gradient is cross-entropy
    on the first N target tokens of every row, nothing else."""
    torch.manual_seed(0)
    _, task, model, criterion = build(lm_data, TINY_TRANSFORMER + [
        "--criterion", "maligan_mixed", "--dropout", "0", "--prefix-init", "3",
        "--prefix-decay", "0", "--num-samples", "2", "--mle-weight", "0.5",
    ])
    sample = first_batch(task)
    monkeypatch.setattr(criterion, "adversarial_loss",
                        lambda model, sample, bundle, lprobs: (lprobs.sum() * 0, {}))
    model.train()
    criterion.begin_update(0)
    loss, _, log = criterion(model, sample)
    assert int(log["disc_fake_rows"]) > 0, "no row was sampled"
    loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    target = sample["target"][:, :3]
    picked = lprobs[:, :3].gather(-1, target.unsqueeze(-1)).squeeze(-1)
    (-0.5 * picked[target.ne(task.target_dictionary.pad())].sum()).backward()
    for name, param in model.named_parameters():
        assert torch.allclose(ours[name], param.grad, atol=1e-6), name
