"""The writer's integrity check, and the mark of a clean stop that says where it runs.

A run checks the file (`PRAGMA quick_check`) before its first write, on the
writer's own connection, unless the last writer stopped cleanly on a file
whose check had passed (the mark `stopped_clean` in `daemon_meta`): then the
check runs beside the first writes, on a read-only connection in a thread of
its own. docs/design.md, "The integrity check", says when the mark is set and
taken away; `store.writer` decides that, this module does the reading,
writing and running.
"""

from __future__ import annotations

import contextlib
import threading

import apsw

from pipelined.logs import get_logger
from pipelined.store.connection import transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["STOPPED_CLEAN", "IntegrityCheck", "mark_clean_stop", "stopped_clean", "unmark"]

log = get_logger("pipelined.writer")

STOPPED_CLEAN = "stopped_clean"  # daemon_meta: the last writer stopped cleanly, checked


def stopped_clean(conn: apsw.Connection) -> bool:
    """Whether the mark is in the file (a read that fails says no: the check then
    comes first, and names the damage)."""
    try:
        return conn.execute("SELECT 1 FROM daemon_meta WHERE key = ?",
                            (STOPPED_CLEAN,)).fetchone() is not None
    except apsw.Error:
        return False


def mark_clean_stop(conn: apsw.Connection, at: str) -> None:
    """Set the mark (a failure only costs the next start the check before its writes)."""
    try:
        with transaction(conn):
            conn.execute("INSERT OR REPLACE INTO daemon_meta(key, value) VALUES (?, ?)",
                         (STOPPED_CLEAN, at))
    except apsw.Error as exc:
        log.warning("writer.mark_failed", error=str(exc))


def unmark(conn: apsw.Connection) -> None:
    """Take the mark away, best effort (the file may be damaged)."""
    try:
        with transaction(conn):
            conn.execute("DELETE FROM daemon_meta WHERE key = ?", (STOPPED_CLEAN,))
    except apsw.Error as exc:
        log.warning("writer.unmark_failed", error=str(exc))


class IntegrityCheck:
    """One run's check: `start` runs it before the first write, or starts it beside
    the writes; `passed` is set once it passed, `on_damage` is called from its
    thread when the check beside the writes fails."""

    def __init__(self, check: Callable[[apsw.Connection], None],
                 open_reader: Callable[[], apsw.Connection] | None,
                 on_damage: Callable[[BaseException], None]) -> None:
        self._check = check
        self._open_reader = open_reader  # None: the check always comes before the writes
        self._on_damage = on_damage
        self.passed = threading.Event()
        self._reader: apsw.Connection | None = None  # the check's connection, while it reads
        self._thread: threading.Thread | None = None

    @property
    def reading(self) -> bool:
        """The check beside the writes still reads (a TRUNCATE checkpoint would wait)."""
        return self._reader is not None

    def start(self, conn: apsw.Connection, beside: bool) -> None:
        """With `beside` (the file carries the mark), start the check on a read-only
        connection of its own; else, or when that connection cannot be opened, run
        it now on the writer's `conn` (raising what it finds)."""
        if not (beside and self._start_beside()):
            self._check(conn)  # before the first write
            self.passed.set()

    def _start_beside(self) -> bool:
        if self._open_reader is None:
            return False
        try:
            reader = self._open_reader()
        except Exception as exc:  # any: the check before the writes names what it is
            log.warning("writer.check_beside_failed", error=str(exc))
            return False
        self._reader = reader
        self._thread = threading.Thread(target=self._run_beside, args=(reader,),
                                        name="pipelined-check", daemon=True)
        self._thread.start()
        return True

    def _run_beside(self, reader: apsw.Connection) -> None:
        try:
            self._check(reader)
        except apsw.InterruptError:
            return  # stopping before it finished: no clean-stop mark then
        except Exception as exc:
            self._on_damage(exc)
            return
        finally:
            self._reader = None
            with contextlib.suppress(apsw.Error):
                reader.close()
        self.passed.set()

    def finish(self, stopping: Callable[[], bool]) -> None:
        """Let a check still running beside the writes finish (at most what one check
        takes: about 0.4 s at 10,000 stories), unless `stopping()` says otherwise."""
        thread = self._thread
        while thread is not None and thread.is_alive() and not stopping():
            thread.join(0.1)

    def interrupt(self) -> None:
        """End a check still running beside the writes (InterruptError in its thread)."""
        reader = self._reader
        if reader is not None:
            with contextlib.suppress(apsw.Error):
                reader.interrupt()  # thread-safe
