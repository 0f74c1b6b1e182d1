"""``--optimizer maligan_adam``: fairseq's Adam with a discriminator parameter group.

Parameters that a criterion marks with ``param_group = "discriminator"`` go into their own
group with the settings in their ``optim_overrides``: the learning rate (``--disc-lr``,
constant: the lr scheduler drives the generator group only) and the clipping norm
(``--disc-clip-norm``; ``--clip-norm`` clips the generator group alone, so the
discriminator's gradient never decides how far the generator steps). These settings are
the command line's also on resume, not the checkpoint's. ``step(groups=...)`` (how the
plugin's tasks step, see ``tasks.AdversarialSteps``) steps the named groups alone: a group
left out keeps its parameters, Adam moments, step count and weight decay as they were.
Without ``groups`` every group steps, as fairseq's Adam does.
"""

import logging
from dataclasses import dataclass

import torch
from fairseq import utils
from fairseq.optim import register_optimizer
from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

logger = logging.getLogger(__name__)

GROUP_KEY = "maligan_group"
GENERATOR_GROUP = "default"
"""The group of unmarked parameters: the generator's."""


@dataclass
class MaliganAdamConfig(FairseqAdamConfig):
    pass


def _split_groups(params: list) -> list[dict]:
    """The generator group first (``get_lr`` reads group 0), then one group per marked set."""
    if params and isinstance(params[0], dict):
        return params
    groups: dict[str, list] = {}
    for param in params:
        groups.setdefault(getattr(param, "param_group", GENERATOR_GROUP), []).append(param)
    ordered = [{"params": groups.pop(GENERATOR_GROUP, []), GROUP_KEY: GENERATOR_GROUP}]
    for name, members in groups.items():
        overrides = getattr(members[0], "optim_overrides", None) or {}
        ordered.append({"params": members, GROUP_KEY: name, **overrides})
    return [group for group in ordered if group["params"]]


@register_optimizer("maligan_adam", dataclass=MaliganAdamConfig)
class MaliganAdam(FairseqAdam):
    """Adam whose discriminator group keeps its own learning rate and idles when unused."""

    def __init__(self, cfg: MaliganAdamConfig, params) -> None:
        params = list(params)
        if len(params) == 1 and not isinstance(params[0], dict) and params[0].dim() == 1:
            logger.warning(
                "maligan_adam got one flattened parameter vector (--fp16): a discriminator "
                "shares the generator's learning rate; add --fp16-no-flatten-grads, or use "
                "--bf16 or --memory-efficient-fp16, to keep its own group"
            )
        groups = _split_groups(params)
        self._overrides = {
            group[GROUP_KEY]: {k: group[k] for k in ("lr", "clip_norm") if k in group}
            for group in groups if group.get(GROUP_KEY, GENERATOR_GROUP) != GENERATOR_GROUP
        }
        super().__init__(cfg, groups)

    def load_state_dict(self, state_dict: dict, optimizer_overrides=None) -> None:
        """Restore the moments; a marked group keeps this run's own ``--disc-*`` settings."""
        super().load_state_dict(state_dict, optimizer_overrides)
        for group in self.param_groups:
            group.update(self._overrides.get(group.get(GROUP_KEY, GENERATOR_GROUP), {}))

    def clip_grad_norm(self, max_norm: float, aggregate_norm_fn=None) -> torch.Tensor:
        """Clip each group by its own norm; returns the generator's (a non-finite one wins)."""
        norms = []
        for group in self.param_groups:
            limit = group.get("clip_norm", max_norm)
            norms.append(utils.clip_grad_norm_(group["params"], limit, aggregate_norm_fn))
        for norm in norms[1:]:
            if not bool(torch.isfinite(norm)):
                return norm
        return norms[0]

    def set_lr(self, lr: float) -> None:
        """The scheduler's learning rate applies to the generator group only."""
        for group in self.param_groups:
            if group.get(GROUP_KEY, GENERATOR_GROUP) == GENERATOR_GROUP:
                group["lr"] = lr

    def get_lr(self) -> float:
        return self.param_groups[0]["lr"]

    def step(self, closure=None, scale: float = 1.0, groups=None) -> None:
        """Step every group, or only those named in ``groups``."""
        if groups is not None:
            for group in self.param_groups:
                if group.get(GROUP_KEY, GENERATOR_GROUP) not in groups:
                    for param in group["params"]:
                        param.grad = None
        super().step(closure, scale)
