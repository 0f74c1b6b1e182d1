"""Reading the files a user names: one line for a file that is missing, empty, truncated,
a directory or of another kind, and torch's safe loader widened only for these reads."""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import typing
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch

from .errors import ConfigError

GENERATOR = "generator checkpoint"
DISCRIMINATOR = "discriminator (scripts/pretrain_discriminator.py)"
ORACLE = "synthetic oracle (scripts/make_oracle_data.py)"


def safe_globals() -> list:
    """The classes that fairseq's own checkpoints and its rank-to-rank state broadcast hold
    (``argparse.Namespace``, omegaconf containers), which torch's safe loader refuses."""
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    return [
        argparse.Namespace, DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode,
        typing.Any, defaultdict, dict, list, int, _TensorPlaceholder,
    ]


@contextlib.contextmanager
def safe_loading() -> Iterator[None]:
    """Allow :func:`safe_globals` in ``torch.load(weights_only=True)`` inside the block only."""
    with torch.serialization.safe_globals(safe_globals()):
        yield


def kind_of(state: Any) -> str:
    """What a loaded file holds: one of the module's kinds, or a short description."""
    if isinstance(state, dict):
        if {"arch", "conditional", "model"} <= set(state):
            return DISCRIMINATOR
        if {"config", "state"} <= set(state):
            return ORACLE
        if "model" in state and ("cfg" in state or "args" in state):
            return GENERATOR
        return f"dictionary with keys {sorted(map(str, state))[:4]}"
    return type(state).__name__


def check_file(path: str, option: str) -> None:
    """A path that is missing, a directory or empty is named in one line."""
    if not os.path.exists(path):
        raise ConfigError(f"{option}: no such file: {path}")
    if os.path.isdir(path):
        raise ConfigError(f"{option}: {path} is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise ConfigError(f"{option}: {path} is empty (0 bytes)")


def load_file(path: str, option: str, expected: str | None = None) -> Any:
    """The object saved in ``path`` (safe loading), which must be of kind ``expected``."""
    check_file(path, option)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    zipped = magic == b"PK\x03\x04"
    if not zipped and not magic.startswith(b"\x80"):
        raise ConfigError(f"{option}: {path} is not a file saved by torch.save")
    if zipped and not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{option}: {path} is truncated ({os.path.getsize(path)} bytes; its end is missing)"
        )
    try:
        with safe_loading():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"{option}: {path} holds objects other than tensors and plain containers, which "
            "torch's safe loader refuses: it is not loaded, so no code in it runs"
        ) from None
    except Exception:
        raise ConfigError(f"{option}: {path} is damaged: torch.load cannot read it") from None
    found = kind_of(state)
    if expected is not None and found != expected:
        raise ConfigError(f"{option}: {path} is a {found}, not a {expected}")
    return state


def model_family(model_state: dict) -> str:
    """'translation model' for encoder-decoder weights, else 'language model'."""
    if any(key.startswith("encoder.") for key in model_state):
        return "translation model"
    return "language model"
