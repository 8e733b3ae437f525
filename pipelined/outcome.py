"""How a daemon run ends: one object every thread reports its failure to.

The apply thread (a failed start-up), the main thread (a dead thread, a path
replaced under the daemon, a wedged writer) and whoever else sees a fatal
problem call `fail()`; the first report wins and the others are kept for the
log. The main thread reads `error` once everything has stopped: a
`PipelinedError` is one line and a non-zero exit, anything else a logged
failure and exit 1. No thread writes into another thread's attributes.
"""

from __future__ import annotations

import threading

__all__ = ["Outcome"]


class Outcome:
    """The first failure of a run (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self.later: list[BaseException] = []  # reported after the first

    def fail(self, error: BaseException) -> None:
        """Report a failure that ends the run; the first one reported is the one."""
        with self._lock:
            if self._error is None:
                self._error = error
            elif error is not self._error:
                self.later.append(error)

    @property
    def error(self) -> BaseException | None:
        with self._lock:
            return self._error

    @property
    def failed(self) -> bool:
        return self.error is not None
