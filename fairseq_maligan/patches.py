"""The few places where the plugin adjusts fairseq itself, applied once at import.

Start of a run (``checkpoint_utils.load_checkpoint``), before any data is read:
- a criterion's ``check_optimizer`` sees the optimizer (an adversarial criterion needs
  ``maligan_adam``);
- the ``--save-dir`` is locked (an ``flock`` that the kernel drops when the process dies,
  so a killed run leaves nothing stuck): a second run on it refuses to start;
- a missing ``--finetune-from-model`` or explicit ``--restore-file`` is named in one line
  (fairseq starts from scratch on a missing ``--restore-file``).

``Trainer.load_checkpoint``:
- torch's safe loader accepts fairseq's own classes (``argparse.Namespace``, omegaconf
  containers, the broadcast placeholder) for this load only, not process-wide;
- a checkpoint that does not load is explained in one line: empty, truncated, not a
  torch file, another kind of file, a translation model for a language model (or the
  reverse), another dictionary, another architecture;
- an unreadable ``checkpoint_last.pt`` (empty, truncated) falls back to the newest
  checkpoint in ``--save-dir`` that loads, with a warning that names both;
- resuming on another number of ranks warns that the data order changes.

Saving:
- ``Trainer.state_dict`` refuses to write a generator or criterion (discriminator) with a
  non-finite parameter, and writes checkpoints that stock fairseq loads with safe loading
  and no ``--user-dir`` (a legacy ``Namespace`` model config becomes a plain dict, a
  plugin task is saved under its stock parent's name);
- ``torch_persistent_save`` and ``PathManager.copy`` (how fairseq makes
  ``checkpoint_last.pt``) write to a temporary file and rename it, remove it when the
  write fails, and say so in one line when the disk is full: the checkpoints already on
  disk stay as they were.

Many ranks:
- with ``--heartbeat-timeout T``, every process group's collectives time out after T/2
  seconds (``distributed_init`` sets torch's default timeout), so when a rank dies or
  freezes the others stop within T/2 seconds of entering the step they cannot finish,
  before fairseq's own heartbeat (which sends SIGINT after T seconds) fires; without it
  torch's 30-minute default holds;
- ``Trainer.train_step`` on many ranks turns a failed step into one line that names the
  rank, the update and the underlying error.

``check_config_strings`` refuses, before any model is built, a checkpoint whose config
holds a non-literal expression that fairseq would ``eval()`` (the plugin's own loaders
call it; stock tools do not).
"""

from __future__ import annotations

import argparse
import ast
import errno
import fcntl
import glob
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from typing import Any

import torch
from fairseq import checkpoint_utils
from fairseq.distributed import utils as distributed_utils
from fairseq.file_io import PathManager
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from fairseq.trainer import Trainer

from .errors import ConfigError, TrainingError
from .files import GENERATOR, check_file, load_file, model_family, safe_loading

logger = logging.getLogger(__name__)

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


def describe_mismatch(model: torch.nn.Module, state: dict, filename: str,
                      option: str) -> str | None:
    """Why a readable checkpoint's generator does not fit the model built from the command
    line (None if its parameters do fit)."""
    own = model.state_dict()
    theirs, ours = model_family(state), model_family(own)
    if theirs != ours:
        return f"{option}: {filename} is a {theirs}; this run trains a {ours}"
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            if "embed_tokens" in key or "output_projection" in key:
                return (
                    f"{option}: {filename} was trained with a dictionary of {value.shape[0]} "
                    f"symbols, the data has {own[key].shape[0]}: binarise the data with the "
                    "checkpoint's dict.txt (fairseq-preprocess --srcdict)"
                )
            return (
                f"{option}: {filename} does not fit the model built from --arch and its "
                f"options: {key} is {tuple(value.shape)} there, {tuple(own[key].shape)} here"
            )
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = [f"lacks {', '.join(missing[:3])}"] if missing else []
        parts += [f"has {', '.join(unexpected[:3])} extra"] if unexpected else []
        return (f"{option}: {filename} does not fit the model built from --arch: it "
                f"{' and '.join(parts)}")
    return None


def checkpoint_option(cfg, filename: str) -> str:
    """The option a checkpoint being loaded came from."""
    if cfg.finetune_from_model and os.path.abspath(filename) == os.path.abspath(
            cfg.finetune_from_model):
        return "--finetune-from-model"
    return "--restore-file"


def newest_loadable(save_dir: str, broken: str) -> str | None:
    """The newest checkpoint in ``save_dir`` besides ``broken`` that loads, if any."""
    candidates = [path for path in glob.glob(os.path.join(save_dir, "checkpoint*.pt"))
                  if os.path.abspath(path) != os.path.abspath(broken)]
    for path in sorted(candidates, key=os.path.getmtime, reverse=True):
        try:
            load_file(path, "--save-dir", GENERATOR)
        except ConfigError:
            continue
        return path
    return None


def _load_checkpoint(original):
    def load_checkpoint(self, filename, *args, **kwargs):
        cfg = self.cfg.checkpoint
        option = checkpoint_option(cfg, filename)
        last = os.path.join(cfg.save_dir, f"checkpoint_last{self.checkpoint_suffix}.pt")
        resuming = os.path.abspath(filename) == os.path.abspath(last)
        with safe_loading():
            try:
                extra_state = original(self, filename, *args, **kwargs)
            except Exception:
                try:
                    state = load_file(filename, option, GENERATOR)
                except ConfigError as unreadable:
                    fallback = newest_loadable(cfg.save_dir, filename) if resuming else None
                    if fallback is None:
                        raise unreadable from None
                    logger.warning("%s does not load (%s): resuming from %s, the newest "
                                   "checkpoint that does", filename, unreadable, fallback)
                    return original(self, fallback, *args, **kwargs)
                reason = describe_mismatch(self.get_model(), state["model"], filename, option)
                if reason is None:
                    raise
                raise ConfigError(reason) from None
        saved = (extra_state or {}).get("world_size")
        if saved is not None and saved != self.data_parallel_world_size:
            logger.warning(
                "%s was saved by a run on %d ranks, this one has %d: the run resumes, but "
                "the order in which batches are drawn changes from here on", filename, saved,
                self.data_parallel_world_size,
            )
        return extra_state

    load_checkpoint.maligan_patched = True
    return load_checkpoint


def lock_save_dir(save_dir: str) -> Any:
    """Hold an exclusive lock on ``save_dir`` for this process's life (None if no folder)."""
    if not os.path.isdir(save_dir):
        return None
    path = os.path.join(save_dir, ".lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise ConfigError(
            f"--save-dir {save_dir} is in use by a running training (pid {owner}): wait for "
            "it to end or choose another --save-dir"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _start_run(original):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        check_optimizer = getattr(trainer.get_criterion(), "check_optimizer", None)
        if check_optimizer is not None:
            check_optimizer(trainer.optimizer)
        if trainer.is_data_parallel_master and not cfg.no_save:
            trainer.save_dir_lock = lock_save_dir(cfg.save_dir)
        last = os.path.join(cfg.save_dir, f"checkpoint_last{trainer.checkpoint_suffix}.pt")
        if cfg.restore_file != "checkpoint_last.pt" and not os.path.exists(cfg.restore_file):
            raise ConfigError(
                f"--restore-file: no such checkpoint: {cfg.restore_file} (a --restore-file "
                "other than the default is read as given, not from --save-dir)"
            )
        if cfg.finetune_from_model and not os.path.exists(last):
            check_file(cfg.finetune_from_model, "--finetune-from-model")
        return original(cfg, trainer, **passthrough_args)

    load_checkpoint.maligan_patched = True
    return load_checkpoint


def non_finite_parameter(module: torch.nn.Module) -> str | None:
    """The name of the first parameter of ``module`` holding a NaN or an infinity."""
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param).all()):
            return name
    return None


def _state_dict(original):
    def state_dict(self):
        for owner, module in (("generator", self.get_model()), ("criterion", self.criterion)):
            name = non_finite_parameter(module)
            if name is not None:
                raise TrainingError(
                    f"the {owner}'s parameter {name} is not finite at update "
                    f"{self.get_num_updates()}: nothing is saved, so the checkpoints in "
                    f"{self.cfg.checkpoint.save_dir} are from before it diverged (lower "
                    "--lr or --disc-lr, or set --clip-norm / --disc-clip-norm)"
                )
        state = original(self)
        if isinstance(state.get("cfg"), dict):
            state["cfg"] = stock_checkpoint_cfg(state["cfg"])
        state.setdefault("extra_state", {})["world_size"] = self.data_parallel_world_size
        return state

    state_dict.maligan_patched = True
    return state_dict


def disk_full(error: BaseException, path: str) -> bool:
    """Whether a failed write of ``path`` failed because its file system is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.isdir(folder) and shutil.disk_usage(folder).free < 1 << 20


def guarded_write(write: Callable[[str], None], target: str) -> None:
    """``write`` a temporary file next to ``target``, then rename it into place; on failure
    remove the temporary file and, if the disk is full, stop with one line."""
    partial = target + ".tmp"
    try:
        write(partial)
        os.replace(partial, target)
    except BaseException as error:
        if os.path.exists(partial):
            os.remove(partial)
        if isinstance(error, Exception) and disk_full(error, target):
            raise TrainingError(
                f"the disk is full: {target} could not be written and was left as it was; "
                "the checkpoints already saved are intact: free space and run the same "
                "command again to resume"
            ) from None
        raise


def _persistent_save(original):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        if async_write or "://" in str(filename):
            return original(obj, filename, async_write)

        def write(partial: str) -> None:
            with open(partial, "wb") as handle:
                torch.save(obj, handle)

        guarded_write(write, filename)

    torch_persistent_save.maligan_patched = True
    return torch_persistent_save


def _atomic_copy(original):
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if "://" in dst_path or (os.path.exists(dst_path) and not overwrite):
            return original(src_path, dst_path, overwrite)
        guarded_write(lambda partial: shutil.copyfile(src_path, partial), dst_path)
        return True

    copy.maligan_patched = True
    return copy


def collective_timeout(heartbeat_timeout: int) -> timedelta | None:
    """How long a collective waits for the other ranks: half of ``--heartbeat-timeout``."""
    if heartbeat_timeout is None or heartbeat_timeout <= 0:
        return None
    return timedelta(seconds=max(1, heartbeat_timeout // 2))


def _distributed_init(original):
    def distributed_init(cfg):
        timeout = collective_timeout(cfg.distributed_training.heartbeat_timeout)
        if timeout is not None:
            from torch.distributed import distributed_c10d

            # the default of every process group this process makes, fairseq's own included
            distributed_c10d.default_pg_timeout = timeout
            distributed_c10d.default_pg_nccl_timeout = timeout
        return original(cfg)

    distributed_init.maligan_patched = True
    return distributed_init


def _train_step(original):
    def train_step(self, samples, raise_oom=False):
        if self.data_parallel_world_size < 2:
            return original(self, samples, raise_oom)
        started = time.monotonic()
        try:
            return original(self, samples, raise_oom)
        except RuntimeError as error:
            cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise TrainingError(
                f"rank {self.data_parallel_rank} stopped at update {self.get_num_updates()}: "
                f"its step failed after {time.monotonic() - started:.0f} s ({cause}); on "
                "many ranks this is how a rank that died or froze shows on the others. "
                "Rerun the same command to resume from checkpoint_last.pt"
            ) from error

    train_step.maligan_patched = True
    return train_step


def apply() -> None:
    """Apply every patch once (idempotent)."""
    if not getattr(Trainer.state_dict, "maligan_patched", False):
        Trainer.state_dict = _state_dict(Trainer.state_dict)
    if not getattr(Trainer.load_checkpoint, "maligan_patched", False):
        Trainer.load_checkpoint = _load_checkpoint(Trainer.load_checkpoint)
    if not getattr(checkpoint_utils.load_checkpoint, "maligan_patched", False):
        checkpoint_utils.load_checkpoint = _start_run(checkpoint_utils.load_checkpoint)
    if not getattr(checkpoint_utils.torch_persistent_save, "maligan_patched", False):
        checkpoint_utils.torch_persistent_save = _persistent_save(
            checkpoint_utils.torch_persistent_save)
    if not getattr(PathManager.copy, "maligan_patched", False):
        PathManager.copy = staticmethod(_atomic_copy(PathManager.copy))
    if not getattr(Trainer.train_step, "maligan_patched", False):
        Trainer.train_step = _train_step(Trainer.train_step)
    if not getattr(distributed_utils.distributed_init, "maligan_patched", False):
        distributed_utils.distributed_init = _distributed_init(distributed_utils.distributed_init)
