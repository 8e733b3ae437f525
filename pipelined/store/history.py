"""Queries over the story history (`story_history`, kept by triggers).

Read-only; the computations over the rows are in `pipelined.history`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apsw

from pipelined.errors import DatabaseError
from pipelined.schema import from_column
from pipelined.store import queries
from pipelined.store.connection import transaction

__all__ = [
    "has_history",
    "history",
    "max_seq",
    "require_history",
    "resolve_ids",
    "rows_after",
    "stats_rows",
]

_BASE_COLUMNS = "seq, at, story_id, kind, from_stage, to_stage, fields"


def _columns(conn: apsw.Connection) -> str:
    """The columns to read: `changes` exists from migration 0007 on (a read command
    may meet a database an older daemon still holds)."""
    names = {str(row[1]) for row in conn.execute("PRAGMA table_info(story_history)")}
    return _BASE_COLUMNS + (", changes" if "changes" in names else ", NULL")


def _changes(text: str | None) -> dict[str, list[Any]] | None:
    """{"field": [old, new]} with each value as reads show it (a flag as a bool)."""
    if not text:
        return None
    return {name: [from_column(name, value) for value in pair]
            for name, pair in json.loads(text).items()}


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, at, story_id, kind, from_stage, to_stage, fields, changes = row
    return {"seq": int(seq), "at": str(at), "id": str(story_id), "kind": str(kind),
            "from_stage": from_stage, "to_stage": to_stage,
            "fields": json.loads(fields) if fields else None, "changes": _changes(changes)}


def has_history(conn: apsw.Connection) -> bool:
    return queries.table_exists(conn, "story_history")


def require_history(conn: apsw.Connection, db_path: Path) -> None:
    """A database from before migration 0003 has no history: one clear error."""
    if not has_history(conn):
        raise DatabaseError(db_path, "it has no story history yet (start the daemon once "
                                     "to upgrade the database)")


def resolve_ids(conn: apsw.Connection, ref: str) -> list[str]:
    """The ids a `log` argument means: the id itself, or every id with that number,
    deleted stories included (`queries.resolve_ref`); the reference itself if none."""
    return queries.resolve_ref(conn, ref, deleted=True) or [ref]


def history(conn: apsw.Connection, story_ids: Sequence[str] | None = None,
            since: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """History rows, oldest first; `limit` keeps the newest ones; `since` is normalized."""
    where: list[str] = []
    params: list[Any] = []
    if story_ids:
        where.append(f"story_id IN ({', '.join('?' * len(story_ids))})")
        params += list(story_ids)
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    sql = f"SELECT {_columns(conn)} FROM story_history"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = [_entry(r) for r in conn.execute(sql, params)]
    rows.reverse()
    return rows


def max_seq(conn: apsw.Connection) -> int:
    row = conn.execute("SELECT max(seq) FROM story_history").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def rows_after(conn: apsw.Connection, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
    """History rows with a sequence number above `seq`, in order (at most `limit`)."""
    return [_entry(r) for r in conn.execute(
        f"SELECT {_columns(conn)} FROM story_history WHERE seq > ? ORDER BY seq LIMIT ?",
        (seq, limit))]


def stats_rows(conn: apsw.Connection) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Stories per stage, and the created/moved/deleted rows in order: one snapshot."""
    with transaction(conn, "DEFERRED"):
        counts = {str(stage): int(count) for stage, count in conn.execute(
            "SELECT stage, count(*) FROM pipeline_items GROUP BY stage")}
        entries = [_entry(r) for r in conn.execute(
            f"SELECT {_columns(conn)} FROM story_history "
            "WHERE kind IN ('created', 'moved', 'deleted') "
            "ORDER BY seq")]
    return counts, entries
