"""Transactions on real SQLite: the error that broke one is the error raised.

SQLite rolls a transaction back by itself on some errors (a full database, an
I/O error, `INSERT OR ROLLBACK`). apsw's `with conn:` then ran a ROLLBACK of
its own, which failed with "cannot rollback - no transaction is active" and
hid the real error, in `pipelined status` and in the log. A full disk is made
here with `PRAGMA max_page_count` (SQLite then answers SQLITE_FULL and rolls
the transaction back, as on a real full disk).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import wait_until

from pipelined.store import queries
from pipelined.store.batch import Batch
from pipelined.store.connection import open_writer, transaction
from pipelined.store.migrations import Migration, apply_migrations
from pipelined.store.writer import Writer, write_batches


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[apsw.Connection]:
    """The writer's kind of connection (WAL) to a fresh file, with one table."""
    connection = open_writer(tmp_path / "t.db")
    connection.execute("CREATE TABLE t(x PRIMARY KEY, blob)")
    connection.execute("INSERT INTO t(x) VALUES (1)")
    try:
        yield connection
    finally:
        connection.close()


def values(conn: apsw.Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute("SELECT x FROM t ORDER BY x")]


def fill_the_disk(conn: apsw.Connection) -> None:
    """The database may not grow by a single page from now on."""
    pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free_the_disk(conn: apsw.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1000000")


def run_in_transaction(conn: apsw.Connection, *statements: str,
                       then_raise: Exception | None = None) -> None:
    """The statements in one `transaction()`; then `then_raise`, if given, from inside it."""
    with transaction(conn):
        for sql in statements:
            conn.execute(sql)
        if then_raise is not None:
            raise then_raise


class TestTransaction:
    def test_commits(self, conn: apsw.Connection) -> None:
        """Without an error everything inside is committed."""
        with transaction(conn):
            conn.execute("INSERT INTO t(x) VALUES (2)")
            assert not conn.getautocommit()
        assert conn.getautocommit()
        assert values(conn) == [1, 2]

    def test_insert_or_rollback_raises_the_constraint_error(self, conn: apsw.Connection) -> None:
        """SQLite ends the transaction itself on an INSERT OR ROLLBACK conflict: the
        ConstraintError is raised (not "cannot rollback"), and the connection works."""
        with pytest.raises(apsw.ConstraintError, match="UNIQUE constraint failed"):
            run_in_transaction(conn, "INSERT INTO t(x) VALUES (2)",
                               "INSERT OR ROLLBACK INTO t(x) VALUES (1)")
        assert conn.getautocommit()
        assert values(conn) == [1]
        with transaction(conn):
            conn.execute("INSERT INTO t(x) VALUES (3)")
        assert values(conn) == [1, 3]

    def test_full_database_raises_the_full_error(self, conn: apsw.Connection) -> None:
        """SQLITE_FULL (which SQLite answers by rolling back): FullError is raised,
        nothing of the transaction is kept, and once there is room it commits."""
        fill_the_disk(conn)
        with pytest.raises(apsw.FullError):
            run_in_transaction(conn, "INSERT INTO t(x) VALUES (2)",
                               "INSERT INTO t(x, blob) VALUES (3, zeroblob(100000))")
        assert conn.getautocommit()
        assert values(conn) == [1]
        free_the_disk(conn)
        with transaction(conn):
            conn.execute("INSERT INTO t(x, blob) VALUES (3, zeroblob(100000))")
        assert values(conn) == [1, 3]

    def test_an_error_in_the_body_rolls_back(self, conn: apsw.Connection) -> None:
        """An exception of the caller's own: the open transaction is rolled back and
        that exception is raised."""
        with pytest.raises(ValueError, match="the caller's"):
            run_in_transaction(conn, "INSERT INTO t(x) VALUES (2)",
                               then_raise=ValueError("the caller's"))
        assert conn.getautocommit()
        assert values(conn) == [1]

    def test_a_failed_commit_is_rolled_back(self, conn: apsw.Connection) -> None:
        """COMMIT refused (a deferred foreign key still broken), which leaves the
        transaction open: it is rolled back and the COMMIT's error raised."""
        conn.execute("CREATE TABLE child(parent REFERENCES t(x) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(apsw.ConstraintError, match="FOREIGN KEY"):
            run_in_transaction(conn, "INSERT INTO t(x) VALUES (2)",
                               "INSERT INTO child(parent) VALUES (99)")
        assert conn.getautocommit()
        assert values(conn) == [1]

    def test_a_failed_rollback_keeps_the_original_error(self, conn: apsw.Connection) -> None:
        """When the rollback itself fails (here an authorizer forbids it), the
        original error is still the one raised; the rollback's error is a note."""
        def no_rollback(action: int, op: str | None, *_rest: Any) -> int:
            if action == apsw.SQLITE_TRANSACTION and op == "ROLLBACK":
                return int(apsw.SQLITE_DENY)
            return int(apsw.SQLITE_OK)

        conn.authorizer = no_rollback
        try:
            with pytest.raises(ValueError, match="original") as raised:
                run_in_transaction(conn, "INSERT INTO t(x) VALUES (2)",
                                   then_raise=ValueError("original"))
        finally:
            conn.authorizer = None
        assert raised.value.__notes__ == [
            "the rollback failed too: AuthError: not authorized"]
        conn.execute("ROLLBACK")
        assert values(conn) == [1]

    def test_immediate_takes_the_write_lock_at_begin(self, conn: apsw.Connection,
                                                     tmp_path: Path) -> None:
        """A writer's transaction fails at BEGIN while another program writes, before
        any of its work; a DEFERRED read snapshot is not held up."""
        other = apsw.Connection(str(tmp_path / "t.db"))
        other.execute("BEGIN IMMEDIATE")
        conn.set_busy_timeout(0)
        ran = []
        try:
            with pytest.raises(apsw.BusyError), transaction(conn):
                ran.append("body")
            with transaction(conn, "DEFERRED"):
                assert values(conn) == [1]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert ran == []
        assert conn.getautocommit()

    def test_read_snapshot_raises_the_original_error(self, conn: apsw.Connection) -> None:
        """`queries.snapshot` ends its read transaction the same way: an error inside
        that made SQLite roll back is raised, not "cannot commit"."""
        with pytest.raises(apsw.ConstraintError), queries.snapshot(conn):
            conn.execute("INSERT OR ROLLBACK INTO t(x) VALUES (1)")
        assert conn.getautocommit()


class TestMigrations:
    def test_a_migration_rolled_back_by_sqlite_raises_its_error(self, tmp_path: Path) -> None:
        """A migration that SQLite rolls back part-way: its own error is raised, it
        is not recorded, nothing of it is kept, and the next start applies it."""
        db = tmp_path / "m.db"
        conn = open_writer(db)
        try:
            broken = Migration("0001_broken.sql", "CREATE TABLE a(x UNIQUE);\n"
                               "INSERT INTO a VALUES (1);\n"
                               "INSERT OR ROLLBACK INTO a VALUES (1);\n")
            with pytest.raises(apsw.ConstraintError):
                apply_migrations(conn, db, [broken])
            assert conn.getautocommit()
            assert conn.execute("SELECT name FROM schema_migrations").fetchall() == []
            assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchall() == []
            fixed = Migration("0001_broken.sql", "CREATE TABLE a(x UNIQUE);\n")
            assert apply_migrations(conn, db, [fixed]) == ["0001_broken.sql"]
        finally:
            conn.close()


def migrated(db: Path) -> apsw.Connection:
    conn = open_writer(db)
    apply_migrations(conn, db)
    return conn


class TestWriteBatches:
    def test_full_database_raises_the_full_error(self, tmp_path: Path) -> None:
        """write_batches on a full database raises FullError and leaves no
        transaction open; the same batch commits once there is room."""
        conn = migrated(tmp_path / "w.db")
        try:
            batch = Batch(crdt_update=b"u" * 200_000, high_water=7)
            fill_the_disk(conn)
            with pytest.raises(apsw.FullError):
                write_batches(conn, [batch])
            assert conn.getautocommit()
            free_the_disk(conn)
            write_batches(conn, [batch])
            assert conn.execute("SELECT count(*) FROM crdt_updates").fetchall() == [(1,)]
        finally:
            conn.close()


class TestWriterOnAFullDisk:
    def test_reports_the_full_error_then_recovers(
            self, tmp_path: Path, log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """The writer thread on a full database: `last_error` and `first_error` say
        FullError (before: "SQLError: cannot rollback - no transaction is active"),
        the log says so too; once there is room again (seen by the connection the
        writer reopens after failures) the batch commits and it logs the recovery."""
        db = tmp_path / "w.db"
        migrated(db).close()
        room = {"full": True}  # read by connect(), in the writer thread

        def connect() -> apsw.Connection:
            conn = open_writer(db)
            if room["full"]:
                fill_the_disk(conn)
            return conn

        writer = Writer(connect, 4)
        writer.start()
        try:
            seq = writer.submit(Batch(crdt_update=b"u" * 200_000, high_water=7))
            error = wait_until(lambda: writer.last_error, what="a failed commit")
            assert error == "FullError: database or disk is full"
            assert isinstance(writer.first_error, apsw.FullError)
            room["full"] = False
            assert writer.wait_committed(seq, timeout=30)
            assert writer.last_error is None and writer.failing_since is None
        finally:
            writer.close(10)
        assert not writer.is_alive()
        events = log_events()
        failed = [e for e in events if e["event"] == "writer.commit_failed"]
        assert failed and failed[0]["error"] == "FullError: database or disk is full"
        assert not [e for e in events if "cannot rollback" in json.dumps(e)]
        assert [e for e in events if e["event"] == "writer.recovered"]
        check = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert check.execute("SELECT high_water FROM story_numbers").fetchall() == [(7,)]
        finally:
            check.close()
