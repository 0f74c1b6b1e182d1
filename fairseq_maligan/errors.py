"""Configuration errors that the command line reports in one line, not as a traceback."""

from __future__ import annotations

import os
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
    """Print :class:`ConfigError` as one line; every other exception as usual.

    Only entry points install it: the project's scripts, and a fairseq command-line tool
    (``fairseq-train --user-dir ...``) when it imports the plugin. A program that merely
    imports the package keeps its own ``sys.excepthook``.
    """
    sys.excepthook = _excepthook


def fairseq_command_line() -> bool:
    """True when the running program is a fairseq tool (``fairseq-train``, ``-m fairseq_cli.*``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    return str(getattr(spec, "name", "")).startswith("fairseq_cli.") or program.startswith(
        "fairseq-")
