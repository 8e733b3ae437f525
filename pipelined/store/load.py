"""What the daemon reads back at startup (rule 5), from a read connection."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import apsw

__all__ = ["Persisted", "load_persisted"]


@dataclass(slots=True)
class Persisted:
    client_id: int
    client_id_is_new: bool
    updates: list[bytes] = field(default_factory=list)
    contents: list[tuple[str, str | None]] = field(default_factory=list)
    signatures: list[tuple[str, str, str, int, int, int, bool]] = field(default_factory=list)
    high_water: int = 0


def load_persisted(conn: apsw.Connection) -> Persisted:
    """Client id, pycrdt updates in order, row contents, file signatures, high-water mark."""
    row = conn.execute("SELECT value FROM daemon_meta WHERE key = 'client_id'").fetchone()
    if row is not None:
        persisted = Persisted(int(row[0]), False)
    else:
        # One process writes a database, so one client id per database keeps the
        # pycrdt state vector from growing on every restart.
        persisted = Persisted(secrets.randbits(32), True)
    persisted.updates = [bytes(r[0]) for r in
                         conn.execute("SELECT data FROM crdt_updates ORDER BY seq")]
    persisted.contents = [(r[0], r[1]) for r in
                          conn.execute("SELECT id, content FROM pipeline_items")]
    persisted.signatures = [
        (r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in conn.execute(
            "SELECT path, story_id, stage, mtime_ns, size, inode, winner FROM file_signatures")
    ]
    hw = conn.execute("SELECT high_water FROM story_numbers WHERE singleton = 1").fetchone()
    persisted.high_water = int(hw[0]) if hw else 0
    return persisted
