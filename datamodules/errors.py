"""The one base class of the errors the suite anticipates (a bad image or folder, an option out of range, a
bad checkpoint, an unwritable folder, a diverged run, a bad sweep): ``restorelab``'s command line prints such
an error as one line, ``restorelab: error: <message>``, and exits 2, without a traceback (``RESTORELAB_DEBUG=1``
shows it). Its message must name the file, option or value at fault. Anything else is a bug and keeps its
traceback. It lives at the bottom of the import graph so that every layer can raise it."""
from __future__ import annotations


class AnticipatedError(ValueError):
    """An anticipated error; ``str(error)`` is one line naming the culprit."""


class DivergenceError(AnticipatedError, FloatingPointError):
    """Training diverged (a non-finite or exploding loss). ``lr`` is the configured learning rate; the CLI's
    checkpointing adds ``checkpoint`` and ``step``, the last healthy state, so that the one line can end with
    the command that resumes from it at a lower rate."""

    def __init__(self, message: str, lr: float | None = None):
        super().__init__(message)
        self.lr = lr
        self.checkpoint = None
        self.step: int | None = None
