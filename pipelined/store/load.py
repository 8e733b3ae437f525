"""What the daemon reads back at startup (docs/design.md, rule 5), from a read-only connection.

Steps, so that a restart is in sync as early as possible: `read_signatures`
is all the stat pass needs; the state loads from `iter_updates`,
`iter_signature_rows`, `iter_row_ids` and `read_unreadable`, one row at a time
(at 100,000 stories a list of each was 60 MB allocated around the document and
freed, holes the daemon kept); `read_contents` is the content map's.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import NamedTuple, cast

import apsw

from pipelined.store.connection import open_read_only

__all__ = [
    "ContentReader",
    "Signatures",
    "iter_row_ids",
    "iter_signature_rows",
    "iter_updates",
    "read_contents",
    "read_signatures",
    "read_unreadable",
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


def read_signatures(conn: apsw.Connection) -> Signatures:
    """Client id, path -> (mtime_ns, size, inode), the id count, the high-water mark."""
    row = conn.execute("SELECT value FROM daemon_meta WHERE key = 'client_id'").fetchone()
    by_path = {path: (mtime, size, inode) for path, mtime, size, inode in conn.execute(
        "SELECT path, mtime_ns, size, inode FROM file_signatures")}
    count = conn.execute("SELECT count(DISTINCT story_id) FROM file_signatures").fetchone()
    hw = conn.execute("SELECT high_water FROM story_numbers WHERE singleton = 1").fetchone()
    shaped = conn.execute("SELECT value FROM daemon_meta WHERE key = 'stored_with'").fetchone()
    suspended = conn.execute("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'"
                             ).fetchone()  # store.search_build.SEARCH_SUSPENDED
    return Signatures(int(row[0]) if row is not None else None, by_path,
                      int(hw[0]) if hw else 0, int(count[0]) if count else 0,
                      str(shaped[0]) if shaped is not None else None, suspended is not None)


def iter_updates(conn: apsw.Connection) -> Iterator[bytes]:
    """The persisted pycrdt updates (and snapshot), in commit order."""
    for (data,) in conn.execute("SELECT data FROM crdt_updates ORDER BY seq"):
        yield bytes(data)


def iter_signature_rows(conn: apsw.Connection
                        ) -> Iterator[tuple[str, str, int, int, int, int]]:
    """(story_id, stage, mtime_ns, size, inode, winner) of every known file."""
    yield from conn.execute(
        "SELECT story_id, stage, mtime_ns, size, inode, winner FROM file_signatures")


def iter_row_ids(conn: apsw.Connection) -> Iterator[str]:
    for (story_id,) in conn.execute("SELECT id FROM pipeline_items"):
        yield str(story_id)


def read_unreadable(conn: apsw.Connection) -> set[str]:
    """The ids whose file could not be read last time."""
    return {str(r[0]) for r in conn.execute(
        "SELECT id FROM story_extras WHERE unreadable = 1")}


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
