"""Loaded at start-up by processes the tests run with ``conftest.GUARDED_ENV``: fail a
fairseq-train process that starts fairseq's background batch thread (see ``conftest.py``).

Only fairseq-train stops inside an epoch (``--max-update``, patience) with the thread still
collating; stock eval-lm and generate read every batch, so their thread has ended before
the interpreter exits, and they keep their stock setting."""

import threading
import traceback

_start = threading.Thread.start


def _start_unless_training_batch_thread(self: threading.Thread) -> None:
    if type(self).__name__ == "BackgroundConsumer" and any(
            frame.filename.endswith("fairseq_cli/train.py") for frame in traceback.extract_stack()):
        raise RuntimeError("fairseq's background batch thread was started by fairseq-train: "
                           "pass --data-buffer-size 0 to fairseq-train")
    _start(self)


threading.Thread.start = _start_unless_training_batch_thread
