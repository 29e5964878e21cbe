"""Every exception clearlstm raises on purpose, in one place (imports nothing of clearlstm).

Each is a subclass of :class:`ClearLSTMError` and of the built-in error a caller would
expect (``ValueError`` for bad values, ``LookupError`` for a missing model), so
``except ValueError`` keeps working. The messages name the argument, what was expected and
what was received.
"""

from __future__ import annotations


class ClearLSTMError(Exception):
    """The base of clearlstm's own errors."""


class UsageError(ClearLSTMError, ValueError):
    """A mistake in what the user asked for (flags that do not fit together); the CLI prints
    it without a traceback."""


class SeriesError(ClearLSTMError, ValueError):
    """A problem with the user's series file or settings; the message says what to do."""


class CheckpointError(ClearLSTMError, ValueError):
    """A model directory or file that cannot be used; the message says which and why."""


class ModelNotFound(ClearLSTMError, LookupError):
    """No model of that name in the folder (or the name would leave the folder)."""


class ApiError(ClearLSTMError):
    """A request the explorer's API refuses: ``status`` (4xx) and a message saying what to
    change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
