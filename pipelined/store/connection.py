"""Opening the database (the writer's connection, read-only connections) and
the one way the package runs a transaction on them.

Every transaction goes through `transaction()`, never apsw's `with conn:`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import apsw

from pipelined.errors import DatabaseCorrupt, DatabaseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Literal

    from _typeshed import StrPath

__all__ = ["as_corrupt", "check_integrity", "open_read_only", "open_writer", "transaction"]

REBUILD_HINT = ("stop the daemon and run `pipelined rebuild` to build a fresh one from the "
                "folders (the old file is kept beside it)")

BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 8 * 1024 * 1024


def open_writer(path: StrPath) -> apsw.Connection:
    """The one read-write connection: WAL, NORMAL sync, foreign keys on."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        conn = apsw.Connection(os.fspath(path))
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise DatabaseError(path, f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        # After a big first import the WAL would keep its size until shutdown;
        # cap what a checkpoint leaves behind.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys=ON")
        # SQLite silently falls back to read-only when it cannot write the file;
        # the daemon would then report READY and persist nothing.
        if conn.readonly("main"):
            raise DatabaseError(path, "the database file is read-only (check the permissions "
                                "of the file, of its -wal and -shm files, and of its folder)")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise DatabaseCorrupt(path, f"{exc}; {REBUILD_HINT}") from None
    except apsw.Error as exc:
        raise DatabaseError(path, f"cannot open it for writing ({exc})") from None
    return conn


def check_integrity(conn: apsw.Connection, path: StrPath) -> None:
    """PRAGMA quick_check; DatabaseCorrupt if not ok."""
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise DatabaseCorrupt(path, f"{exc}; {REBUILD_HINT}") from None
    if problems != ["ok"]:
        found = " ".join(" ".join(problems).split())[:160]
        raise DatabaseCorrupt(path, f"quick_check found: {found}; {REBUILD_HINT}")


def as_corrupt(path: StrPath, exc: BaseException) -> BaseException:
    """SQLite's corruption errors as the one-line DatabaseCorrupt; others unchanged."""
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return DatabaseCorrupt(path, f"{exc}; {REBUILD_HINT}")
    return exc


def open_read_only(path: StrPath) -> apsw.Connection:
    """A read-only connection; works whether or not the daemon runs."""
    if not os.path.isfile(path):
        raise DatabaseError(path, "no such database (has `pipelined run` run on this root?)")
    try:
        conn = apsw.Connection(os.fspath(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise DatabaseCorrupt(path, f"{exc}; {REBUILD_HINT}") from None
    except apsw.Error as exc:
        raise DatabaseError(path, f"cannot read it ({exc})") from None
    return conn


@contextmanager
def transaction(conn: apsw.Connection,
                mode: Literal["IMMEDIATE", "DEFERRED"] = "IMMEDIATE") -> Iterator[None]:
    """BEGIN, then COMMIT; on any error a ROLLBACK that never hides the error.

    SQLite rolls a transaction back by itself on some errors (SQLITE_FULL,
    SQLITE_IOERR, SQLITE_NOMEM, SQLITE_BUSY, an `INSERT OR ROLLBACK` conflict).
    apsw's `with conn:` then still runs its rollback, which fails with "cannot
    rollback - no transaction is active" and is raised instead of the disk-full
    error that caused it. Here the rollback runs only while a transaction is
    still open, and the error raised is always the original one (a failed
    rollback is added to it as a note). A failed COMMIT is rolled back too.

    IMMEDIATE (for writers) takes the write lock at BEGIN, so a busy database
    fails there, before any work; DEFERRED is for read snapshots.
    """
    conn.execute(f"BEGIN {mode}")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if not conn.getautocommit():  # still open: SQLite did not roll it back itself
            try:
                conn.execute("ROLLBACK")
            except apsw.Error as failed:
                exc.add_note(f"the rollback failed too: {type(failed).__name__}: {failed}")
        raise
