"""Opening the database: the writer's connection and read-only connections."""

from __future__ import annotations

from pathlib import Path

import apsw

from pipelined.errors import DatabaseError

__all__ = ["open_read_only", "open_writer"]

BUSY_TIMEOUT_MS = 5000
WAL_SIZE_LIMIT = 8 * 1024 * 1024


def open_writer(path: Path) -> apsw.Connection:
    """The one read-write connection: WAL, NORMAL sync, foreign keys on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = apsw.Connection(str(path))
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        if str(mode).lower() != "wal":
            raise DatabaseError(path, f"cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        # After a big first import the WAL would keep its size until shutdown;
        # cap what a checkpoint leaves behind.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        conn.execute("PRAGMA foreign_keys=ON")
    except apsw.Error as exc:
        raise DatabaseError(path, f"cannot open it ({exc})") from None
    return conn


def open_read_only(path: Path) -> apsw.Connection:
    """A read-only connection; works whether or not the daemon runs."""
    if not path.is_file():
        raise DatabaseError(path, "no such database (has `pipelined run` run on this root?)")
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except apsw.Error as exc:
        raise DatabaseError(path, f"cannot read it ({exc})") from None
    return conn
