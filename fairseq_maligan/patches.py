"""The few places where the plugin adjusts fairseq itself, applied once at import.

- ``FairseqTask.train_step`` passes ``update_num`` to criteria that define
  ``set_num_updates`` (the stock task gives it to the model only), so the schedule and
  the discriminator/generator phases follow the trainer's update count exactly, and lets
  the criterion check the optimizer (``check_optimizer``) before the first step.
- ``Trainer.state_dict`` writes checkpoints that stock fairseq loads with torch's safe
  ``weights_only`` loading and no ``--user-dir``: a legacy ``argparse.Namespace`` model
  config becomes a plain dict, and a plugin task is saved under its stock parent's name.
- ``PathManager.copy`` (how fairseq makes ``checkpoint_last.pt`` from the first file of
  a save) copies to a temporary file and renames it, so a process killed mid-copy never
  leaves a truncated checkpoint in place of a good one.
- ``Trainer.load_checkpoint``, when loading fails, compares the checkpoint's parameter
  shapes with the model's and explains in one line why it does not fit (most often: it
  was trained with another dictionary); other failures pass through unchanged.
- ``check_config_strings`` refuses, before any model is built, a checkpoint whose config
  holds a non-literal expression that fairseq would ``eval()`` (the plugin's own loaders
  call it; stock tools do not).
- torch's safe loader is told about the classes that fairseq's own checkpoints and its
  rank-to-rank state broadcast contain (``argparse.Namespace``, omegaconf containers).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import typing
from collections import defaultdict
from dataclasses import fields
from typing import Any

import torch
from fairseq.file_io import PathManager
from fairseq.tasks import TASK_DATACLASS_REGISTRY, FairseqTask
from fairseq.trainer import Trainer

from .errors import ConfigError

STOCK_TASKS: dict[str, str] = {}
"""Plugin task name -> the stock fairseq task its checkpoints are saved under."""


def stock_checkpoint_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint ``cfg`` that stock fairseq can load without the plugin."""
    cfg = dict(cfg)
    model_cfg = cfg.get("model")
    if isinstance(model_cfg, argparse.Namespace):
        cfg["model"] = vars(model_cfg).copy()
    task_cfg = cfg.get("task")
    if isinstance(task_cfg, dict) and task_cfg.get("_name") in STOCK_TASKS:
        stock = STOCK_TASKS[task_cfg["_name"]]
        known = {f.name for f in fields(TASK_DATACLASS_REGISTRY[stock])}
        cfg["task"] = {k: v for k, v in task_cfg.items() if k in known}
        cfg["task"]["_name"] = stock
    return cfg


CHECKED_SECTIONS = ("model", "task", "criterion", "optimizer", "lr_scheduler")
"""Config sections whose strings fairseq may ``eval`` while building a model or task."""


def check_config_strings(state: dict[str, Any], filename: str) -> None:
    """Refuse a checkpoint whose config holds an expression that is not a plain literal.

    fairseq ``eval()``s some string options while it builds a model (e.g.
    ``adaptive_softmax_cutoff`` through ``utils.eval_str_list``), so a crafted checkpoint
    would run code in any tool that loads it. Every string with a bracket in the model,
    task, criterion, optimizer and scheduler sections (and in a legacy ``args``) must be a
    Python literal; names and paths without brackets cannot call anything.
    """

    def visit(value: Any, where: str) -> None:
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        if isinstance(value, dict):
            for key, item in value.items():
                if key != "data":
                    visit(item, f"{where}.{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{where}[{index}]")
        elif isinstance(value, str) and any(mark in value for mark in "([{"):
            try:
                ast.literal_eval(value)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise ConfigError(
                    f"{filename}: {where} is {value[:60]!r}, not a literal; fairseq would "
                    "eval() it when building the model, so the file is not loaded"
                ) from None

    cfg = state.get("cfg") or {}
    for section in CHECKED_SECTIONS:
        if isinstance(cfg, dict) and section in cfg:
            visit(cfg[section], f"cfg.{section}")
    if state.get("args") is not None:
        visit(state["args"], "args")


def _train_step(original):
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if hasattr(criterion, "set_num_updates"):
            criterion.set_num_updates(update_num)
        if hasattr(criterion, "check_optimizer"):
            criterion.check_optimizer(optimizer)
        return original(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    train_step.maligan_patched = True
    return train_step


def _state_dict(original):
    def state_dict(self):
        state = original(self)
        if isinstance(state.get("cfg"), dict):
            state["cfg"] = stock_checkpoint_cfg(state["cfg"])
        return state

    state_dict.maligan_patched = True
    return state_dict


def describe_mismatch(model: torch.nn.Module, filename: str) -> str | None:
    """Why a checkpoint's generator does not fit the model built from the command line
    (None if its parameters do fit, or the file holds no readable generator)."""
    try:
        state = torch.load(filename, map_location="cpu", weights_only=True)["model"]
    except Exception:
        return None
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            if "embed_tokens" in key or "output_projection" in key:
                return (
                    f"{filename} was trained with a dictionary of {value.shape[0]} symbols, "
                    f"the data has {own[key].shape[0]}: binarise the data with the "
                    "checkpoint's dict.txt (fairseq-preprocess --srcdict)"
                )
            return (
                f"{filename} does not fit the model built from --arch and its options: "
                f"{key} is {tuple(value.shape)} there, {tuple(own[key].shape)} here"
            )
    missing = sorted(set(own) - set(state))
    if missing:
        return f"{filename} does not fit the model: it lacks {', '.join(missing[:3])}"
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        return f"{filename} does not fit the model: it has {', '.join(unexpected[:3])} extra"
    return None


def _load_checkpoint(original):
    def load_checkpoint(self, filename, *args, **kwargs):
        try:
            return original(self, filename, *args, **kwargs)
        except Exception:
            reason = describe_mismatch(self.get_model(), filename)
            if reason is None:
                raise
            raise ConfigError(reason) from None

    load_checkpoint.maligan_patched = True
    return load_checkpoint


def _atomic_copy(original):
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if "://" in dst_path or (os.path.exists(dst_path) and not overwrite):
            return original(src_path, dst_path, overwrite)
        partial = dst_path + ".tmp"
        shutil.copyfile(src_path, partial)
        os.replace(partial, dst_path)
        return True

    copy.maligan_patched = True
    return copy


def _allow_safe_globals() -> None:
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    torch.serialization.add_safe_globals(
        [
            argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata,
            AnyNode, typing.Any, defaultdict, dict, list, int, _TensorPlaceholder,
        ]
    )


def apply() -> None:
    """Apply every patch once (idempotent)."""
    if not getattr(FairseqTask.train_step, "maligan_patched", False):
        FairseqTask.train_step = _train_step(FairseqTask.train_step)
    if not getattr(Trainer.state_dict, "maligan_patched", False):
        Trainer.state_dict = _state_dict(Trainer.state_dict)
    if not getattr(Trainer.load_checkpoint, "maligan_patched", False):
        Trainer.load_checkpoint = _load_checkpoint(Trainer.load_checkpoint)
    if not getattr(PathManager.copy, "maligan_patched", False):
        PathManager.copy = staticmethod(_atomic_copy(PathManager.copy))
    _allow_safe_globals()
