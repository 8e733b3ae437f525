"""The writer's integrity check: before its first write, or beside it when the last
writer stopped cleanly on a checked file (docs/design.md, "The integrity check").

Real SQLite files and the real writer thread; the check itself is a function the
test holds back with an event, so "the commit did not wait for it" is seen, not
timed. The daemon's life with a damaged file is in test_recovery.py and
test_first_import.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest
from conftest import observe, stopped_clean, wait_until
from test_writer_errors import fresh_db

from pipelined.errors import DatabaseCorrupt
from pipelined.store import writer as writer_module
from pipelined.store.batch import Batch
from pipelined.store.connection import open_read_only, open_writer
from pipelined.store.writer import Writer


def note(n: int) -> Batch:
    return Batch(meta={"note": str(n)})


class HeldCheck:
    """A check that records its connection and waits for `release` (or fails)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.conns: list[apsw.Connection] = []
        self.error = error

    def __call__(self, conn: apsw.Connection) -> None:
        self.conns.append(conn)
        self.started.set()
        assert self.release.wait(30), "the test never released the check"
        self.done.set()
        if self.error is not None:
            raise self.error


def start_writer(db: Path, check: Callable[[apsw.Connection], None],
                 open_reader: Callable[[], apsw.Connection] | None = None) -> Writer:
    """A writer on `db` with `check`, its check connection read-only by default, begun."""
    writer = Writer(lambda: open_writer(db), 4, check=check, path=db,
                    open_reader=open_reader or (lambda: open_read_only(db)))
    writer.start()
    writer.begin()
    return writer


def no_reader() -> apsw.Connection:
    raise apsw.CantOpenError("cannot open")


def stopped_by_damage(db: Path,
                      open_reader: Callable[[], apsw.Connection] | None = None) -> Writer:
    """A writer whose check finds damage at once, once it has stopped."""
    check = HeldCheck(DatabaseCorrupt(db, "quick_check found: damage"))
    check.release.set()
    writer = start_writer(db, check, open_reader)
    try:
        wait_until(lambda: not writer.is_alive(), what="the writer to stop")
    finally:
        writer.close(10)
    return writer


def stop_cleanly(db: Path) -> None:
    """A writer that passes its check, commits, and stops: it leaves the mark."""
    check = HeldCheck()
    check.release.set()
    writer = start_writer(db, check)
    writer.wait_committed(writer.submit(note(0)), 10)
    writer.close(10)
    assert not writer.is_alive() and writer.first_error is None


class TestBeforeTheFirstWrite:
    def test_a_file_no_writer_stopped_on_is_checked_first(self, tmp_path: Path) -> None:
        """No mark (a first start, a crash, a kill -9): the first commit waits for the
        check, which runs on the writer's own connection."""
        db = fresh_db(tmp_path)
        check = HeldCheck()
        writer = start_writer(db, check)
        try:
            seq = writer.submit(note(1))
            wait_until(check.started.is_set, what="the check")
            assert observe(lambda: writer.committed < seq, 0.3)
            check.release.set()
            assert writer.wait_committed(seq, 10)
        finally:
            check.release.set()
            writer.close(10)
        assert stopped_clean(db)  # it passed, and the writer stopped cleanly

    def test_a_failed_check_writes_nothing(self, tmp_path: Path) -> None:
        db = fresh_db(tmp_path)
        writer = stopped_by_damage(db)
        assert isinstance(writer.first_error, DatabaseCorrupt)
        assert writer.commits == 0 and not stopped_clean(db)


    def test_a_writer_without_a_check_leaves_no_mark(self, tmp_path: Path) -> None:
        """No check, no claim that the file was checked."""
        db = fresh_db(tmp_path)
        writer = Writer(lambda: open_writer(db), 4, path=db)
        writer.start()
        try:
            assert writer.wait_committed(writer.submit(note(7)), 10)
        finally:
            writer.close(10)
        assert writer.first_error is None and not stopped_clean(db)


class TestBesideTheFirstWrites:
    def test_after_a_clean_stop_the_first_commit_does_not_wait(self, tmp_path: Path) -> None:
        """The mark: the check runs on a read-only connection of its own while the
        first commit lands; that commit clears the mark; the next clean stop, the
        check passed, sets it again."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        assert stopped_clean(db)
        check = HeldCheck()
        writer = start_writer(db, check)
        try:
            wait_until(check.started.is_set, what="the check")
            assert writer.wait_committed(writer.submit(note(2)), 10)
            assert not check.done.is_set()  # committed while the check still ran
            assert not stopped_clean(db)  # a crash from here on means a check first
            assert check.conns[0].readonly("main")
            check.release.set()
        finally:
            check.release.set()
            writer.close(10)
        assert writer.first_error is None and stopped_clean(db)

    def test_damage_found_beside_stops_the_writer(self, tmp_path: Path) -> None:
        """The check finding damage after the first writes stops the writer with its
        DatabaseCorrupt, as a check before them would, and leaves no mark."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        check = HeldCheck(DatabaseCorrupt(db, "quick_check found: damage"))
        writer = start_writer(db, check)
        try:
            assert writer.wait_committed(writer.submit(note(3)), 10)
            check.release.set()
            wait_until(lambda: not writer.is_alive(), what="the writer to stop")
        finally:
            check.release.set()
            writer.close(10)
        assert isinstance(writer.first_error, DatabaseCorrupt)
        assert writer.outcome.error is writer.first_error
        assert not stopped_clean(db)

    def test_damage_found_before_any_commit_takes_the_mark_away(self, tmp_path: Path) -> None:
        """Found before the writer committed anything: it stops (not as abandoned: this
        is no second signal) and deletes the mark, so the next start checks first."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        writer = stopped_by_damage(db)
        assert writer.commits == 0 and not writer.abandoned
        assert isinstance(writer.first_error, DatabaseCorrupt)
        assert not stopped_clean(db)

    def test_a_clean_stop_lets_the_check_finish(self, tmp_path: Path) -> None:
        """A stop soon after a start waits for the check beside the writes, so the next
        start need not check first."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        check = HeldCheck()
        writer = start_writer(db, check)
        try:
            assert writer.wait_committed(writer.submit(note(4)), 10)
            writer.close(timeout=0)
            assert observe(writer.is_alive, 0.3)
            check.release.set()
            writer.join(10)
        finally:
            check.release.set()
            writer.close(10)
        assert not writer.is_alive() and writer.first_error is None
        assert stopped_clean(db)

    def test_a_second_signal_interrupts_the_check_and_leaves_no_mark(
            self, tmp_path: Path) -> None:
        """Abandoning (the daemon's second signal) interrupts the check's statement
        (here one that never ends by itself); the file was not seen whole, so the
        next writer checks before it writes."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        started = threading.Event()

        def endless_check(conn: apsw.Connection) -> None:
            started.set()
            conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                         "SELECT count(*) FROM n").fetchall()

        writer = start_writer(db, endless_check)
        try:
            wait_until(started.is_set, what="the check")
            assert writer.wait_committed(writer.submit(note(5)), 10)
            writer.close(timeout=0)
            assert observe(writer.is_alive, 0.3)  # waiting for the check
            writer.abandon()
            writer.join(10)
        finally:
            writer.abandon()
            writer.join(10)
        assert not writer.is_alive() and writer.first_error is None
        assert not stopped_clean(db)

    def test_a_reader_that_cannot_open_means_a_check_first(self, tmp_path: Path) -> None:
        """The mark is there but the check's own connection cannot be opened: the check
        runs before the first write, on the writer's connection, and the writer goes on."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        check = HeldCheck()
        writer = start_writer(db, check, no_reader)
        try:
            seq = writer.submit(note(6))
            wait_until(check.started.is_set, what="the check")
            assert not check.conns[0].readonly("main")
            assert observe(lambda: writer.committed < seq, 0.3)
            check.release.set()
            assert writer.wait_committed(seq, 10)
        finally:
            check.release.set()
            writer.close(10)
        assert writer.first_error is None and stopped_clean(db)

    def test_a_failed_check_before_the_writes_takes_the_mark_away(self, tmp_path: Path) -> None:
        """The mark was there but the check ran before the writes (its own connection
        would not open) and found damage: the mark goes, as after a check beside."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        writer = stopped_by_damage(db, no_reader)
        assert isinstance(writer.first_error, DatabaseCorrupt)
        assert not stopped_clean(db)

    def test_a_second_signal_while_busy_keeps_the_mark(self, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        """Abandoned while another program holds the write lock, before any commit:
        nothing says the file changed, so the mark stays, and no last write is tried
        (it would wait out the lock: a second signal must stop at once)."""
        db = fresh_db(tmp_path)
        stop_cleanly(db)
        unmarks: list[apsw.Connection] = []
        monkeypatch.setattr(writer_module, "unmark", unmarks.append)
        check = HeldCheck()
        check.release.set()
        writer = start_writer(db, check)
        wait_until(writer.connected.is_set, what="the writer's connection")
        other = apsw.Connection(str(db))
        try:
            other.execute("BEGIN IMMEDIATE")
            writer.submit(note(8))
            wait_until(lambda: writer.attempts >= 1, what="a busy attempt")
            writer.abandon()
            writer.join(30)  # the attempt under way ends at the busy timeout
            assert not writer.is_alive()
        finally:
            other.execute("ROLLBACK")
            other.close()
            writer.abandon()
        assert writer.commits == 0 and unmarks == [] and stopped_clean(db)

    def test_the_first_commit_reaches_the_main_file_once_the_check_is_done(
            self, tmp_path: Path) -> None:
        """A copy of the database file alone (no -wal) taken once the check beside has
        finished carries no mark: the unmarking commit is checkpointed then."""
        import shutil

        db = fresh_db(tmp_path)
        stop_cleanly(db)
        check = HeldCheck()
        writer = start_writer(db, check)
        try:
            assert writer.wait_committed(writer.submit(note(9)), 10)
            check.release.set()
            wait_until(check.done.is_set, what="the check")

            def copy_has_no_mark() -> bool:
                copy = tmp_path / "copy.db"
                shutil.copyfile(db, copy)
                return not stopped_clean(copy)

            wait_until(copy_has_no_mark, what="the unmarking commit in the main file")
        finally:
            check.release.set()
            writer.close(10)

    def test_an_unreadable_mark_means_a_check_first(self, tmp_path: Path) -> None:
        """A file whose daemon_meta cannot be read (here: not there) gets the check
        before the first write."""
        db = tmp_path / "bare.db"
        check = HeldCheck()
        writer = start_writer(db, check)
        try:
            wait_until(check.started.is_set, what="the check")
            assert not check.conns[0].readonly("main")  # the writer's own connection
        finally:
            check.release.set()
            writer.close(10)
