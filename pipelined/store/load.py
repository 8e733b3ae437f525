"""What the daemon reads back at startup (rule 5), from a read-only connection.

Two steps, so that a restart with nothing changed is in sync as early as
possible: `read_signatures` is all the stat pass needs; `read_state` is what
applying changes needs (pycrdt updates, full signature rows, contents).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import apsw

__all__ = ["Signatures", "StoredState", "read_signatures", "read_state"]


@dataclass(slots=True)
class Signatures:
    """The file signatures and ids the database holds: enough for the stat pass."""

    client_id: int | None
    by_path: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    high_water: int = 0
    story_count: int = 0  # distinct ids among the files



@dataclass(slots=True)
class StoredState:
    updates: list[bytes]
    signatures: list[tuple[str, str, str, int, int, int, int]]
    contents: list[tuple[str, str | None]]
    unreadable: set[str]  # ids whose file could not be read last time
    row_ids: set[str]


def read_signatures(conn: apsw.Connection) -> Signatures:
    """Client id, path -> (mtime_ns, size, inode), the id count, the high-water mark."""
    row = conn.execute("SELECT value FROM daemon_meta WHERE key = 'client_id'").fetchone()
    found = Signatures(int(row[0]) if row is not None else None)
    found.by_path = {path: (mtime, size, inode) for path, mtime, size, inode in conn.execute(
        "SELECT path, mtime_ns, size, inode FROM file_signatures")}
    count = conn.execute("SELECT count(DISTINCT story_id) FROM file_signatures").fetchone()
    found.story_count = int(count[0]) if count else 0
    hw = conn.execute("SELECT high_water FROM story_numbers WHERE singleton = 1").fetchone()
    found.high_water = int(hw[0]) if hw else 0
    return found


def read_state(conn: apsw.Connection) -> StoredState:
    """pycrdt updates in commit order, full signature rows, every row's content."""
    contents = cast(list[tuple[str, str | None]],
                    conn.execute("SELECT id, content FROM pipeline_items").fetchall())
    return StoredState(
        updates=[bytes(r[0]) for r in conn.execute("SELECT data FROM crdt_updates ORDER BY seq")],
        signatures=cast(list[tuple[str, str, str, int, int, int, int]], conn.execute(
            "SELECT path, story_id, stage, mtime_ns, size, inode, winner FROM file_signatures"
        ).fetchall()),
        contents=contents,
        row_ids={story_id for story_id, _content in contents},
        unreadable={str(r[0]) for r in conn.execute(
            "SELECT id FROM story_extras WHERE errors LIKE '%cannot read the file%'")},
    )
