"""sd_notify, written with the standard library.

A datagram to `$NOTIFY_SOCKET` (an AF_UNIX path, or an abstract address when
it starts with `@`), UTF-8 encoded: the `sdnotify` package mangles non-Latin-1
STATUS text and swallows errors. Without the variable every call does nothing.
A failed send never raises (the daemon must not die because systemd went
away); it is logged once per run of failures and counted.

Also here: the two facts sd_notify callers need from their environment,
`watchdog_usec()` (sd_watchdog_enabled) and `monotonic_usec()` (for
`RELOADING=1`'s `MONOTONIC_USEC=`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

from pipelined.logs import get_logger

__all__ = ["Notifier", "monotonic_usec", "watchdog_usec"]

log = get_logger("pipelined.notify")


class Notifier:
    """Sends sd_notify messages; failures are logged and counted, never raised.

    Thread-safe: READY comes from the apply thread, the rest from the main thread.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.last_error: str | None = None
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send `KEY=value` lines as one datagram; True if it was sent."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        # One assignment per line: a newline inside a value would start another.
        data = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8")
        with self._lock:
            try:
                with socket.socket(socket.AF_UNIX,
                                   socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                    # Never block the daemon: a listener that stopped reading fills
                    # its queue, and a blocking send would hang the main thread.
                    sock.setblocking(False)
                    sock.sendto(data, target)
            except OSError as exc:
                self.failures += 1
                if self.last_error is None:
                    log.warning("notify.failed", socket=self.address, error=str(exc),
                                message=lines[0].split("=", 1)[0] if lines else "")
                self.last_error = str(exc)
                return False
            if self.last_error is not None:
                log.info("notify.recovered", socket=self.address, failures=self.failures)
                self.last_error = None
        return True


def watchdog_usec(env: Mapping[str, str] | None = None, pid: int | None = None) -> int | None:
    """`$WATCHDOG_USEC` if the watchdog is meant for this process, else None.

    As sd_watchdog_enabled(3): `$WATCHDOG_PID`, when set, must be our pid (a
    shell wrapper that execs us keeps its pid; a forked child does not).
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    wanted = env.get("WATCHDOG_PID")
    if wanted:
        try:
            if int(wanted) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC= with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
