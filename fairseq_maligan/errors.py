"""Configuration errors that the command line reports in one line, not as a traceback."""

from __future__ import annotations

import sys
from types import TracebackType


class ConfigError(ValueError):
    """Bad user input (an option, a file, a data set); the message names it."""


def _excepthook(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if isinstance(error, ConfigError):
        print(f"fairseq-maligan: error: {error}", file=sys.stderr)
        return
    _default_hook(kind, error, traceback)


_default_hook = sys.excepthook


def install_excepthook() -> None:
    """Print :class:`ConfigError` as one line; every other exception as usual."""
    sys.excepthook = _excepthook
