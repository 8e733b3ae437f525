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

import apsw

from pipelined.errors import DatabaseError
from pipelined.layout import stat_signatures
from pipelined.shaping import stored_with_settings
from pipelined.store.connection import as_corrupt, open_read_only
from pipelined.store.load import Signatures, read_signatures

__all__ = ["Survey", "take_survey"]


class Survey(NamedTuple):
    stored: Signatures  # what the database holds
    seen: dict[str, tuple[int, int, int]]  # what the stat pass found: path -> signature
    unlistable: dict[str, str]  # stage folders that could not be listed, and why
    stored_with: str  # the data-shaping settings rows are made with now
    stat_ms: int  # the stat pass alone
    same_files: bool  # seen == stored.by_path, compared once (100,000 entries each)

    @property
    def unchanged(self) -> bool:
        """The database equals the folders: every file as stored, every folder listed,
        a document already made (a client id) and the rows made with these settings.
        (A folder that cannot be listed makes READY wait for the state: its stories
        are kept as they are, which the apply thread's reconciler records.)"""
        return (not self.unlistable and self.same_files
                and self.stored.client_id is not None
                and self.stored.stored_with == self.stored_with)


def take_survey(db_path: Path, root: Path, stages: Iterable[str], max_file_bytes: int,
                clock: Callable[[], float] = time.monotonic) -> Survey:
    """Read the stored signatures, then stat every story file once (no reads).

    A database that cannot be read is one DatabaseError (DatabaseCorrupt for
    damaged pages, which names `pipelined rebuild`)."""
    conn = open_read_only(db_path)
    try:
        stored = read_signatures(conn)
    except apsw.Error as exc:
        error = as_corrupt(db_path, exc)
        if error is exc:
            error = DatabaseError(db_path, f"cannot read its file signatures "
                                           f"({type(exc).__name__}: {exc})")
        raise error from None
    finally:
        conn.close()
    started = clock()
    unlistable: dict[str, str] = {}
    seen = stat_signatures(root, stages, unlistable)
    stat_ms = int((clock() - started) * 1000)
    return Survey(stored, seen, unlistable, stored_with_settings(max_file_bytes), stat_ms,
                  seen == stored.by_path)
