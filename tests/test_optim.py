"""maligan_adam: each group clipped by its own norm, the command line's D settings on resume."""

import torch
from omegaconf import OmegaConf

from fairseq_maligan.optim import MaliganAdam, MaliganAdamConfig


def optimizer(disc_lr: float, disc_clip: float) -> tuple[MaliganAdam, torch.Tensor, torch.Tensor]:
    generator = torch.nn.Parameter(torch.zeros(2))
    discriminator = torch.nn.Parameter(torch.zeros(2))
    discriminator.param_group = "discriminator"
    discriminator.optim_overrides = {"lr": disc_lr, "clip_norm": disc_clip}
    cfg = OmegaConf.structured(MaliganAdamConfig(lr=[0.1], tpu=False))
    opt = MaliganAdam(cfg, [generator, discriminator])
    return opt, generator, discriminator


def test_groups_are_clipped_separately():
    opt, generator, discriminator = optimizer(1e-3, disc_clip=2.0)
    generator.grad = torch.tensor([3.0, 4.0])           # norm 5
    discriminator.grad = torch.tensor([30.0, 40.0])     # norm 50
    norm = opt.clip_grad_norm(1.0)
    assert torch.isclose(norm, torch.tensor(5.0))       # the generator's, not the joint 50.2
    assert torch.isclose(generator.grad.norm(), torch.tensor(1.0))
    assert torch.isclose(discriminator.grad.norm(), torch.tensor(2.0))


def test_unclipped_discriminator_and_non_finite_norm():
    opt, generator, discriminator = optimizer(1e-3, disc_clip=0.0)
    generator.grad = torch.tensor([3.0, 4.0])
    discriminator.grad = torch.tensor([30.0, 40.0])
    opt.clip_grad_norm(1.0)
    assert torch.isclose(discriminator.grad.norm(), torch.tensor(50.0))
    discriminator.grad = torch.tensor([float("nan"), 0.0])
    assert not torch.isfinite(opt.clip_grad_norm(1.0))  # the trainer's NaN check still fires


def test_resume_keeps_the_command_lines_discriminator_settings():
    opt, generator, discriminator = optimizer(1e-3, disc_clip=2.0)
    generator.grad, discriminator.grad = torch.ones(2), torch.ones(2)
    opt.step()
    saved = opt.state_dict()
    resumed, _, _ = optimizer(5e-4, disc_clip=0.5)
    resumed.load_state_dict(saved)
    disc_group = resumed.param_groups[1]
    assert disc_group["lr"] == 5e-4 and disc_group["clip_norm"] == 0.5
    assert resumed.optimizer.state_dict()["state"][1]["step"] == 1  # moments restored
