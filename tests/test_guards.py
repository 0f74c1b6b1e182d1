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
    return task, model, criterion, optimizer, first_batch(task)


def snapshot(*modules):
    return [p.detach().clone() for module in modules for p in module.parameters()]


def step(task, model, criterion, optimizer, sample, update):
    """One update as fairseq's trainer runs it: the task's train_step and optimizer_step."""
    optimizer.zero_grad()
    _, _, log = task.train_step(sample, model, criterion, optimizer, update)
    task.optimizer_step(optimizer, model, update)
    return log


def test_nan_discriminator_logits_skip_the_update(lm_data, monkeypatch, caplog):
    task, model, criterion, optimizer, sample = setup(lm_data)
    step(task, model, criterion, optimizer, sample, 0)  # a normal update first: Adam has state
    before = snapshot(model, criterion)
    adam_state = {
        param: {name: torch.as_tensor(value).clone() for name, value in state.items()}
        for param, state in optimizer.optimizer.state.items()
    }

    forward = criterion.discriminator.forward
    monkeypatch.setattr(criterion.discriminator, "forward",
                        lambda tokens, src_tokens=None: forward(tokens) * float("nan"))
    with caplog.at_level(logging.WARNING):
        log = step(task, model, criterion, optimizer, sample, 1)
    assert "non-finite" in caplog.text and log["skipped_updates"] == 1
    after = snapshot(model, criterion)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    for param, state in optimizer.optimizer.state.items():
        assert all(torch.equal(torch.as_tensor(v), adam_state[param][n]) for n, v in state.items())

    monkeypatch.setattr(criterion.discriminator, "forward", forward)
    step(task, model, criterion, optimizer, sample, 2)  # training goes on
    assert not all(torch.equal(a, b) for a, b in zip(after, snapshot(model, criterion)))


def test_discriminator_group_has_its_own_lr_and_idles_when_unused(lm_data):
    task, model, criterion, optimizer, sample = setup(lm_data, ["--disc-warmup-updates", "5"])
    groups = optimizer.param_groups
    assert [g["lr"] for g in groups] == [0.01, 0.02]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in criterion.parameters()}
    optimizer.set_lr(0.5)  # the lr scheduler drives the generator only
    assert [g["lr"] for g in groups] == [0.5, 0.02]
    optimizer.set_lr(0.01)

    generator_before = snapshot(model)
    disc_before = snapshot(criterion)
    step(task, model, criterion, optimizer, sample, 0)  # warm-up: the discriminator alone moves
    assert all(torch.equal(a, b) for a, b in zip(generator_before, snapshot(model)))
    assert not all(torch.equal(a, b) for a, b in zip(disc_before, snapshot(criterion)))
    assert not any(p in optimizer.optimizer.state for p in model.parameters())


def test_groups_come_from_the_schedule_not_the_gradients(lm_data):
    """Under the stock task too: a generator gradient in a discriminator-only update (here
    planted by hand) moves nothing, and the generator steps once the warm-up is over."""
    torch.manual_seed(0)
    cfg, task, model, criterion = build(
        lm_data, ARGS + ["--disc-warmup-updates", "1"], task="language_modeling"
    )
    params = [p for p in (*model.parameters(), *criterion.parameters()) if p.requires_grad]
    optimizer = optim.build_optimizer(cfg.optimizer, params)
    sample = first_batch(task)
    before = snapshot(model)
    optimizer.zero_grad()
    task.train_step(sample, model, criterion, optimizer, 0)
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    task.optimizer_step(optimizer, model, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(model)))
    step(task, model, criterion, optimizer, sample, 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, snapshot(model)))
