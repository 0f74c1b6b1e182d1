"""Loaded at start-up by processes the tests run with ``conftest.GUARDED_ENV``: fail a
process that starts fairseq's background batch thread (see ``conftest.py``)."""

import threading

_start = threading.Thread.start


def _start_unless_batch_thread(self: threading.Thread) -> None:
    if type(self).__name__ == "BackgroundConsumer":
        raise RuntimeError("fairseq's background batch thread was started: "
                           "pass --data-buffer-size 0 to fairseq-train")
    _start(self)


threading.Thread.start = _start_unless_batch_thread
