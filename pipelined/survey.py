"""The start's first look: the stored file signatures against one stat pass.

The daemon's main thread takes it once the migrations are applied and the
watches started, before it imports the writer, the sync or pycrdt: when
nothing changed while the daemon was stopped, the database already equals
the folders and READY goes out at once (docs/design.md, rule 5 of the sync).
The apply thread's `Startup` takes the survey over: what differs is re-read
there. Imports only the standard library, apsw and our lean modules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from pipelined.layout import stat_signatures
from pipelined.shaping import stored_with_settings
from pipelined.store.connection import open_read_only
from pipelined.store.load import Signatures, read_signatures

__all__ = ["Survey", "take_survey"]


class Survey(NamedTuple):
    stored: Signatures  # what the database holds
    seen: dict[str, tuple[int, int, int]]  # what the stat pass found: path -> signature
    unlistable: dict[str, str]  # stage folders that could not be listed, and why
    stored_with: str  # the data-shaping settings rows are made with now
    stat_ms: int  # the stat pass alone

    @property
    def unchanged(self) -> bool:
        """The database equals the folders: every file as stored, every folder listed,
        a document already made (a client id) and the rows made with these settings."""
        return (not self.unlistable and self.seen == self.stored.by_path
                and self.stored.client_id is not None
                and self.stored.stored_with == self.stored_with)


def take_survey(db_path: Path, root: Path, stages: Iterable[str], max_file_bytes: int,
                clock: Callable[[], float] = time.monotonic) -> Survey:
    """Read the stored signatures, then stat every story file once (no reads)."""
    conn = open_read_only(db_path)
    try:
        stored = read_signatures(conn)
    finally:
        conn.close()
    started = clock()
    unlistable: dict[str, str] = {}
    seen = stat_signatures(root, stages, unlistable)
    return Survey(stored, seen, unlistable, stored_with_settings(max_file_bytes),
                  int((clock() - started) * 1000))
