"""Configuration errors that the command line reports in one line, not as a traceback.

The ``argparse`` types below check an option's value where the option is declared, so a
bad value stops the script at once with argparse's one line, ``prog: error: argument
--option: must be ..., got VALUE`` (exit code 2), before any model or file is loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from types import TracebackType


class ConfigError(ValueError):
    """Bad user input (an option, a file, a data set); the message names it."""


class TrainingError(RuntimeError):
    """A fault that stops a run (divergence, a full disk); the message says what to do."""


def _excepthook(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if not isinstance(error, (ConfigError, TrainingError)):
        _default_hook(kind, error, traceback)
        return
    line = f"fairseq-maligan: error: {error}"
    torch = sys.modules.get("torch")
    if torch is None or not (torch.distributed.is_available()
                             and torch.distributed.is_initialized()):
        print(line, file=sys.stderr)
        return
    # torch wraps this hook to prefix its output with the rank, and writes it only after
    # the hook returns; the interpreter's teardown would then let the collective
    # backend's threads print a C++ abort ("terminate called ...") after our line. So a
    # rank writes its own prefixed line and exits at once.
    print(f"[rank{torch.distributed.get_rank()}]: {line}", file=sys.__stderr__, flush=True)
    sys.stdout.flush()
    os._exit(1)


_default_hook = sys.excepthook


def install_excepthook() -> None:
    """Print :class:`ConfigError` and :class:`TrainingError` as one line; every other
    exception as usual.

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


def _number(text: str, kind: Callable[[str], float], valid: Callable[[float], bool],
            what: str) -> float:
    """``kind(text)`` if it converts and is ``valid``, else argparse's one-line error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count, a size, a length, an n-gram order)."""
    return int(_number(text, int, lambda value: value > 0, "a positive integer"))


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a prefix length, where 0 means none)."""
    return int(_number(text, int, lambda value: value >= 0, "an integer >= 0"))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a temperature, a learning rate); nan and inf
    are refused, as they would silently turn every result into nan."""
    return _number(text, float, lambda value: math.isfinite(value) and value > 0,
                   "a positive finite number")


def existing_dir(text: str) -> str:
    """argparse type: a directory that exists (a data directory to read)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such directory: {text}")
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return text


def existing_file(text: str) -> str:
    """argparse type: a file that exists (a results file to read)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    return text


def output_file(text: str) -> str:
    """argparse type: a file to write, whose folder exists, checked before the work that
    produces its content (the folder is not created: a mistyped one should not be)."""
    folder = os.path.dirname(text) or "."
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not os.path.isdir(folder):
        state = "is a file" if os.path.exists(folder) else "does not exist"
        raise argparse.ArgumentTypeError(f"the folder {folder} of {text} {state}")
    return text


def output_dir(text: str) -> str:
    """argparse type: a folder to write into, created later with its missing parents; so
    only a folder that cannot be created is refused (a file in its place or above it, or
    an ancestor that is not writable)."""
    if os.path.isdir(text):
        return text
    if os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    ancestor = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise argparse.ArgumentTypeError(f"cannot create {text}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot create {text}: {ancestor} is not writable")
    return text
