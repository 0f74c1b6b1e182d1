"""Numerical guards and the optimizer's idle groups."""

import logging

import torch
from conftest import TINY_TRANSFORMER, build, first_batch
from fairseq import optim

ARGS = TINY_TRANSFORMER + [
    "--criterion", "maligan_mixed", "--optimizer", "maligan_adam", "--lr", "0.01",
    "--disc-lr", "0.02", "--prefix-init", "0", "--prefix-decay", "0", "--num-samples", "2",
]


def setup(lm_data, extra=()):
    torch.manual_seed(0)
    cfg, task, model, criterion = build(lm_data, ARGS + list(extra))
    params = [p for p in (*model.parameters(), *criterion.parameters()) if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    return model, criterion, optimizer, first_batch(task)


def snapshot(*modules):
    return [p.detach().clone() for module in modules for p in module.parameters()]


def step(model, criterion, optimizer, sample, update):
    criterion.set_num_updates(update)
    model.train()
    optimizer.zero_grad()
    loss, _, log = criterion(model, sample)
    optimizer.backward(loss)
    optimizer.step()
    return log


def test_nan_discriminator_logits_skip_the_update(lm_data, monkeypatch, caplog):
    model, criterion, optimizer, sample = setup(lm_data)
    step(model, criterion, optimizer, sample, 0)  # a normal update first: Adam has state
    before = snapshot(model, criterion)
    adam_state = {
        param: {name: torch.as_tensor(value).clone() for name, value in state.items()}
        for param, state in optimizer.optimizer.state.items()
    }

    forward = criterion.discriminator.forward
    monkeypatch.setattr(criterion.discriminator, "forward",
                        lambda tokens, src_tokens=None: forward(tokens) * float("nan"))
    with caplog.at_level(logging.WARNING):
        log = step(model, criterion, optimizer, sample, 1)
    assert "non-finite" in caplog.text and log["skipped_updates"] == 1
    after = snapshot(model, criterion)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    for param, state in optimizer.optimizer.state.items():
        assert all(torch.equal(torch.as_tensor(v), adam_state[param][n]) for n, v in state.items())

    monkeypatch.setattr(criterion.discriminator, "forward", forward)
    step(model, criterion, optimizer, sample, 2)  # training goes on
    assert not all(torch.equal(a, b) for a, b in zip(after, snapshot(model, criterion)))


def test_discriminator_group_has_its_own_lr_and_idles_when_unused(lm_data):
    model, criterion, optimizer, sample = setup(lm_data, ["--disc-warmup-updates", "5"])
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.02]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in criterion.parameters()}
    optimizer.set_lr(0.5)  # the lr scheduler drives the generator only
    assert [g["lr"] for g in groups] == [0.5, 0.02]
    optimizer.set_lr(0.01)

    generator_before = snapshot(model)
    disc_before = snapshot(criterion)
    step(model, criterion, optimizer, sample, 0)  # warm-up: the discriminator alone moves
    assert all(torch.equal(a, b) for a, b in zip(generator_before, snapshot(model)))
    assert not all(torch.equal(a, b) for a, b in zip(disc_before, snapshot(criterion)))
    assert not any(p in optimizer.optimizer.state for p in model.parameters())
