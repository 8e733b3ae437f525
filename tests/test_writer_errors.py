"""The writer retries only what can pass by itself (busy, locked, full, I/O, cannot
open); anything else (a constraint, a bug, damaged pages) stops it with one error,
instead of a 'degraded' state that never ends."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest
from conftest import wait_until

from pipelined.errors import CommitFailed, DatabaseCorrupt
from pipelined.store.batch import Batch, RowUpsert
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.writer import Writer

FIELDS = {"name": "n", "agent": None, "retry_count": 0, "blocked": None, "depends_on": None}


def fresh_db(tmp_path: Path) -> Path:
    db = tmp_path / "w.db"
    conn = open_writer(db)
    apply_migrations(conn, db)
    conn.close()
    return db


def row(story_id: str, stage: str | None) -> RowUpsert:
    return RowUpsert(story_id=story_id, stage=stage, fields=FIELDS,  # type: ignore[arg-type]
                     content="text", extra={}, errors=())


class TestErrorsThatDoNotPass:
    def test_a_constraint_error_stops_the_writer_at_once(self, tmp_path: Path) -> None:
        """A batch no retry can commit (a NOT NULL stage: a bug) stops the writer after
        one attempt, with CommitFailed naming SQLite's error, instead of retrying forever."""
        db = fresh_db(tmp_path)
        writer = Writer(lambda: open_writer(db), 4, path=db)
        writer.start()
        try:
            writer.submit(Batch(upserts=[row("1_story_bad", None)]))
            wait_until(lambda: not writer.is_alive(), timeout=15, what="the writer to stop")
        finally:
            writer.close(10)
        assert writer.attempts == 1
        assert isinstance(writer.first_error, CommitFailed)
        assert "ConstraintError" in str(writer.first_error)
        assert "does not pass by itself" in str(writer.first_error)

    def test_damaged_pages_stop_it_naming_rebuild(self, tmp_path: Path) -> None:
        """A write that meets damaged pages stops the writer with DatabaseCorrupt, whose
        line names `pipelined rebuild`."""
        db = fresh_db(tmp_path)
        conn = open_writer(db)
        root_page, page_size = conn.execute(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
            "WHERE name = 'pipeline_items'").fetchone()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.close()
        with open(db, "r+b") as handle:
            handle.seek((root_page - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))
        writer = Writer(lambda: open_writer(db), 4, path=db)
        writer.start()
        try:
            writer.submit(Batch(upserts=[row("2_story_x", "1_backlog")]))
            wait_until(lambda: not writer.is_alive(), timeout=15, what="the writer to stop")
        finally:
            writer.close(10)
        assert isinstance(writer.first_error, DatabaseCorrupt)
        assert "pipelined rebuild" in str(writer.first_error)


class TestErrorsThatPass:
    def test_a_busy_database_is_retried_until_it_commits(self, tmp_path: Path) -> None:
        """Another program holding the write lock is retried (the writer stays alive,
        degraded) and the batch commits once the lock is released."""
        db = fresh_db(tmp_path)
        other = apsw.Connection(str(db))
        writer = Writer(lambda: _short_busy(open_writer(db)), 4, sleep=lambda _s: None,
                        path=db)
        writer.start()
        wait_until(lambda: writer._conn is not None, what="the writer's connection")
        other.execute("BEGIN IMMEDIATE")
        try:
            seq = writer.submit(Batch(upserts=[row("3_story_ok", "1_backlog")]))
            wait_until(lambda: writer.last_error, timeout=15, what="a failed attempt")
            assert writer.is_alive() and "BusyError" in (writer.last_error or "")
            other.execute("ROLLBACK")
            assert writer.wait_committed(seq, timeout=15)
        finally:
            other.close()
            writer.close(10)
        assert writer.first_error is not None and not isinstance(writer.first_error,
                                                                 CommitFailed)


def _short_busy(conn: apsw.Connection) -> apsw.Connection:
    conn.set_busy_timeout(10)  # fail fast while the other program holds the lock
    return conn


@pytest.mark.parametrize("error", ["BusyError", "LockedError", "FullError", "IOError",
                                   "CantOpenError", "ReadOnlyError"])
def test_transient_errors_are_the_ones_retried(error: str) -> None:
    """What the writer retries: exactly SQLite's errors a wait can outlive."""
    from pipelined.store.writer import TRANSIENT

    assert getattr(apsw, error) in TRANSIENT
    assert apsw.ConstraintError not in TRANSIENT and apsw.SQLError not in TRANSIENT
