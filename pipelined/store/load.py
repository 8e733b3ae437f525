"""What the daemon reads back at startup (docs/design.md, rule 5), from a read-only connection.

Steps, so that a restart is in sync as early as possible: `read_signatures`
is all the stat pass needs; `read_state` is what applying changes needs
(pycrdt updates, full signature rows); `read_contents` the content map, for
the changed ids first when there are any, and the rest after READY.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple, cast

import apsw

from pipelined.store.connection import open_read_only

__all__ = [
    "ContentReader",
    "Signatures",
    "StoredState",
    "read_contents",
    "read_signatures",
    "read_state",
    "read_updates",
]


# NamedTuples, not dataclasses: this module is imported before READY, and a
# dataclass costs far more to define (the README's benchmark section).
class Signatures(NamedTuple):
    """The file signatures and ids the database holds: enough for the stat pass."""

    client_id: int | None
    by_path: dict[str, tuple[int, int, int]]  # path -> (mtime_ns, size, inode)
    high_water: int
    story_count: int  # distinct ids among the files
    stored_with: str | None  # the data-shaping settings the rows were made with (JSON)
    search_suspended: bool = False  # a first import's bulk index build is still owed


class StoredState(NamedTuple):
    updates: list[bytes]
    signatures: list[tuple[str, str, str, int, int, int, int]]
    row_ids: set[str]
    unreadable: set[str]  # ids whose file could not be read last time


def read_signatures(conn: apsw.Connection) -> Signatures:
    """Client id, path -> (mtime_ns, size, inode), the id count, the high-water mark."""
    row = conn.execute("SELECT value FROM daemon_meta WHERE key = 'client_id'").fetchone()
    by_path = {path: (mtime, size, inode) for path, mtime, size, inode in conn.execute(
        "SELECT path, mtime_ns, size, inode FROM file_signatures")}
    count = conn.execute("SELECT count(DISTINCT story_id) FROM file_signatures").fetchone()
    hw = conn.execute("SELECT high_water FROM story_numbers WHERE singleton = 1").fetchone()
    shaped = conn.execute("SELECT value FROM daemon_meta WHERE key = 'stored_with'").fetchone()
    suspended = conn.execute("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'"
                             ).fetchone()  # store.writer.SEARCH_SUSPENDED
    return Signatures(int(row[0]) if row is not None else None, by_path,
                      int(hw[0]) if hw else 0, int(count[0]) if count else 0,
                      str(shaped[0]) if shaped is not None else None, suspended is not None)


def read_updates(conn: apsw.Connection) -> list[bytes]:
    """The persisted pycrdt updates (and snapshot), in commit order."""
    return [bytes(r[0]) for r in conn.execute("SELECT data FROM crdt_updates ORDER BY seq")]


def read_state(conn: apsw.Connection) -> StoredState:
    """pycrdt updates in commit order, full signature rows, the row ids."""
    return StoredState(
        updates=read_updates(conn),
        signatures=cast(list[tuple[str, str, str, int, int, int, int]], conn.execute(
            "SELECT path, story_id, stage, mtime_ns, size, inode, winner FROM file_signatures"
        ).fetchall()),
        row_ids={str(r[0]) for r in conn.execute("SELECT id FROM pipeline_items")},
        unreadable={str(r[0]) for r in conn.execute(
            "SELECT id FROM story_extras WHERE unreadable = 1")},
    )


def read_contents(conn: apsw.Connection,
                  story_ids: Collection[str] | None = None) -> list[tuple[str, str | None]]:
    """(id, content) of every row, or of the listed ids only."""
    if story_ids is None:
        return cast(list[tuple[str, str | None]],
                    conn.execute("SELECT id, content FROM pipeline_items").fetchall())
    return cast(list[tuple[str, str | None]], conn.execute(
        "SELECT id, content FROM pipeline_items WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(story_ids)),)).fetchall())


class ContentReader:
    """The committed texts of the content map (content.ContentMap), by id: one
    read-only connection of the apply thread, opened on the first read."""

    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._conn: apsw.Connection | None = None

    def read(self, story_ids: Collection[str]) -> dict[str, str | None]:
        if self._conn is None:
            self._conn = open_read_only(self._db_path)
        return dict(read_contents(self._conn, story_ids))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
