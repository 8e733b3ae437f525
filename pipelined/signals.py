"""The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP reloads its settings.

Python runs a signal handler on the main thread, between two bytecodes of
whatever that thread was doing. A handler that takes a lock can find it held
by the very code it interrupted: `threading.Event.set()` from a handler that
interrupted the main thread's own `Event.wait()`, between the wait taking the
event's lock and releasing it, blocks the main thread for ever (a SIGTERM then
never stopped the daemon). So the handlers here only set flags, and the main
thread sleeps in `poll` on a pipe that CPython's own C-level handler writes a
byte into (`signal.set_wakeup_fd`) for every signal, whichever thread the
kernel delivered it to: no lock is ever shared between a handler and what it
interrupts, and no signal leaves the main thread asleep.
"""

from __future__ import annotations

import math
import os
import select
import signal
from types import FrameType

_NAMES: dict[int, str] = {signal.SIGTERM.value: "SIGTERM", signal.SIGINT.value: "SIGINT"}


class DaemonSignals:
    """What the signals asked for, and a wait they cut short.

    `install()` sets the handlers (main thread only). `wait(timeout)` returns
    True once a stop was asked for, at once if it already was; a reload only
    ends the wait early (the caller looks at `reload_requested`).
    """

    def __init__(self) -> None:
        self.count = 0  # SIGTERM and SIGINT received; a second one hurries the stop
        self.name = ""  # the last of them, e.g. "SIGTERM"
        self.reload_requested = False
        # Never closed: a signal may come until the process exits, and a byte written
        # to a closed descriptor could land in whatever file took its number.
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._read, select.POLLIN)

    @property
    def stopping(self) -> bool:
        return self.count > 0

    def install(self) -> None:
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        # Flags only: no lock, no logging, no I/O (see the module's docstring).
        self.count += 1
        self.name = _NAMES.get(signum, str(signum))

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, less if a signal comes; True if stopping.

        A signal's byte ends the sleep at once; its handler has run by the time
        the caller looks at the flags again, or at the latest by the next wait.
        """
        if self.stopping:
            return True
        if self._poller.poll(max(0, math.ceil(timeout * 1000))):
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:  # drained
                pass
        return self.stopping
