"""Is the daemon alive and making progress? The probes and the watchdog pinger.

A thread that is alive can still be wedged: a writer stuck on a lock, an
apply thread stuck in a reconcile. So each part of the daemon is probed for
two things: its thread runs, and it does not sit on waiting work without
making progress for `stall_s`. systemd's watchdog is fed only while every
probe passes, so a wedged part gets the daemon restarted.

The probes know nothing of the threads they watch: they take callables. Only
the daemon's main thread calls them (they keep a little state between calls).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from pipelined.errors import PipelinedError
from pipelined.notify import Notifier

__all__ = [
    "DEFAULT_STALL_S",
    "Liveness",
    "PathGuard",
    "ProgressProbe",
    "StatusReporter",
    "WatchdogPinger",
    "status_line",
]

DEFAULT_STALL_S = 30.0  # without a systemd watchdog: when STATUS calls a part stalled

Clock = Callable[[], float]


class ProgressProbe:
    """One part of the daemon: `None` while it is healthy, else why not.

    `done()` is anything that changes whenever the part makes progress (a
    commit counter, the time of the last flush); `waiting()` says whether it
    has work to do. A part without work is never stalled, however long it
    has been idle.
    """

    def __init__(self, name: str, alive: Callable[[], bool],
                 done: Callable[[], object] = lambda: None,
                 waiting: Callable[[], bool] = lambda: False,
                 stall_s: float = DEFAULT_STALL_S, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.alive = alive
        self.done = done
        self.waiting = waiting
        self.stall_s = stall_s
        self._clock = clock
        self._since: float | None = None  # when the current wait without progress began
        self._last_done: object = None

    def __call__(self) -> str | None:
        if not self.alive():
            return f"{self.name} is not running"
        if not self.waiting():
            self._since = None
            return None
        now = self._clock()
        done = self.done()
        if self._since is None or done != self._last_done:
            self._since, self._last_done = now, done
            return None
        idle = now - self._since
        if idle >= self.stall_s:
            return f"{self.name} made no progress for {idle:.1f} s with work waiting"
        return None

    def __repr__(self) -> str:
        return f"ProgressProbe({self.name!r}, stall_s={self.stall_s})"


class Liveness:
    """All probes at once: the reasons the daemon is unhealthy (empty when healthy).

    Every probe runs on every call, so each keeps track of its own progress.
    """

    def __init__(self, probes: Sequence[Callable[[], str | None]]) -> None:
        self.probes = tuple(probes)

    def __call__(self) -> list[str]:
        return [reason for probe in self.probes if (reason := probe()) is not None]

    def __repr__(self) -> str:
        return f"Liveness({list(self.probes)!r})"


class WatchdogPinger:
    """`WATCHDOG=1` every `interval_s` (half of WATCHDOG_USEC), only while healthy.

    `interval_s=None` (no watchdog, or one meant for another pid) never pings.
    An unhealthy tick sends nothing and leaves the ping due, so the first
    healthy tick after it pings at once.
    """

    def __init__(self, notifier: Notifier, interval_s: float | None,
                 clock: Clock = time.monotonic) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self._clock = clock
        self._next = clock()
        self.pings = 0

    @classmethod
    def from_usec(cls, notifier: Notifier, usec: int | None,
                  clock: Clock = time.monotonic) -> WatchdogPinger:
        return cls(notifier, None if usec is None else usec / 2e6, clock)

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def due_in(self) -> float:
        """Seconds until the next ping is due (0 if overdue, inf if disabled)."""
        if self.interval_s is None:
            return math.inf
        return max(0.0, self._next - self._clock())

    def tick(self, healthy: bool) -> bool:
        """Ping if one is due and the daemon is healthy; True if a ping was sent."""
        if self.interval_s is None or not healthy:
            return False
        now = self._clock()
        if now < self._next:
            return False
        self.notifier.send("WATCHDOG=1")
        self.pings += 1
        self._next = now + self.interval_s
        return True

    def __repr__(self) -> str:
        return f"WatchdogPinger(interval_s={self.interval_s})"


def status_line(stages: Mapping[str, int], last_sync: str | None,
                problems: Sequence[str] = (), writer_error: str | None = None,
                waiting: int = 0, folder_problems: Sequence[str] = ()) -> str:
    """The text of `STATUS=` once ready, as `systemctl status` shows it.

    `in sync: 12 stories (1_backlog 5, 2_current 4, 4_merge 3), last sync <time>`;
    `degraded: …` while the writer fails or a stage folder cannot be read or
    watched, `stalled: …` when the watchdog stops.
    """
    total = sum(stages.values())
    counts = ", ".join(f"{stage} {count}" for stage, count in sorted(stages.items()))
    text = f"{total} stories" + (f" ({counts})" if counts else "")
    text += f", last sync {last_sync}" if last_sync else ", never synced"
    if problems:
        return f"stalled: {'; '.join(problems)}; {text}"
    if writer_error:
        return f"degraded: cannot write the database ({writer_error}), {waiting} batches " \
               f"waiting; {text}"
    if folder_problems:
        return f"degraded: {'; '.join(folder_problems)}; {text}"
    return f"in sync: {text}"


EXTEND_EVERY_S = 1.0  # a startup this long sends EXTEND_TIMEOUT_USEC=, and again each second
EXTEND_BY_USEC = 30_000_000


class StatusReporter:
    """What systemd hears as `STATUS=`, sent only when it changes, and during a long
    start-up `EXTEND_TIMEOUT_USEC=` each second while it makes progress.

    The main thread's alone. `read_counts` gives the stories per stage and the
    last sync from the database; it is called again only after new commits.
    """

    def __init__(self, notifier: Notifier,
                 read_counts: Callable[[], tuple[dict[str, int], str | None]],
                 started: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self._read_counts = read_counts
        self._started = started
        self._clock = clock
        self.text = ""
        self._commits = -1
        self._counts: dict[str, int] = {}
        self._last_sync: str | None = None
        self._last_extend = 0.0

    def starting(self, problems: Sequence[str]) -> None:
        """Before READY: `starting, stalled: …`, or more time for a long first import."""
        now = self._clock()
        if problems:
            self._send("starting, stalled: " + "; ".join(problems))
            return
        if now - self._started < EXTEND_EVERY_S or now - self._last_extend < EXTEND_EVERY_S:
            return
        self._last_extend = now
        self.text = f"starting: reading the stories ({now - self._started:.0f} s)"
        self.notifier.send(f"EXTEND_TIMEOUT_USEC={EXTEND_BY_USEC}", f"STATUS={self.text}")

    def running(self, problems: Sequence[str], commits: int, writer_error: str | None,
                waiting: int, folder_problems: Sequence[str]) -> None:
        """After READY: `status_line`, the counts read again after new commits."""
        if commits != self._commits:
            try:
                self._counts, self._last_sync = self._read_counts()
                self._commits = commits
            except Exception:  # STATUS is advisory: read again at the next tick
                pass
        self._send(status_line(self._counts, self._last_sync, problems, writer_error,
                               waiting, folder_problems))

    def resend(self) -> None:
        """The next STATUS= is sent even if unchanged (after a reload's READY=1)."""
        self.text = ""

    def _send(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.notifier.send(f"STATUS={text}")


class _Identity(NamedTuple):
    device: int
    inode: int


def _identity(path: Path) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _Identity(st.st_dev, st.st_ino)


class PathGuard:
    """The paths the daemon was started on must keep naming the files it opened.

    A database file deleted or replaced under the daemon would take every
    later commit with it (SQLite goes on writing the unlinked inode), a lock
    file deleted lets a second daemon start on the same database, and a root
    folder moved away leaves the watches on a folder nobody looks for. Checked
    by the main thread on every health tick (a stat each): the daemon then
    stops with one line and a non-zero exit, and systemd restarts it on what
    the paths name now. The apply thread checks too, before it confirms a
    delete: none is while a path fails (a replaced root looks empty).
    """

    def __init__(self) -> None:
        self._watched: list[tuple[Path, _Identity | None, Callable[[str], PipelinedError]]] = []

    def remember(self, path: Path, error: Callable[[str], PipelinedError]) -> None:
        """Take the file `path` names now; `error(what_happened)` is raised if that changes."""
        self._watched.append((path, _identity(path), error))

    def check(self) -> PipelinedError | None:
        """The error for the first path that no longer names its file, or None."""
        for path, identity, error in self._watched:
            now = _identity(path)
            if now != identity:
                return error("deleted" if now is None else "replaced by another file")
        return None
