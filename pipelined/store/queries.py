"""Read queries over a read-only connection: what the commands show.

Imports nothing heavy (no watchdog, no pycrdt) so short CLI calls stay fast.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import apsw

from pipelined.errors import PipelinedError
from pipelined.quickjson import loads as json_loads
from pipelined.schema import (
    FLAG_FIELDS,
    ITEM_COLUMNS,
    MAX_NUMBER_DIGITS,
    REFS_FIELDS,
    errors_from_column,
    parse_number,
    refs_from_column,
    to_column,
)
from pipelined.store.connection import open_read_only, transaction
from pipelined.store.lock import holder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any

    from _typeshed import StrPath

__all__ = [
    "confirmed_by_daemon",
    "conflicts",
    "counts_by_stage",
    "get_story",
    "high_water",
    "iter_columns",
    "iter_stories",
    "list_stories",
    "meta",
    "page_key",
    "page_stories",
    "parse_errors",
    "resolve_ref",
    "snapshot",
    "stories_by_id",
    "story_rows",
    "story_stage",
    "table_exists",
    "wait_for_fields",
    "wait_for_stage",
]

def _item(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of ITEM_COLUMNS as reads show it (schema.from_column, inlined: `ls` of
    a large pipeline makes one per story)."""
    item = dict(zip(ITEM_COLUMNS, row, strict=True))
    for name in FLAG_FIELDS:
        if item[name] is not None:
            item[name] = bool(item[name])
    for name in REFS_FIELDS:
        item[name] = refs_from_column(item[name]) if item[name] else None
    return item


@contextmanager
def snapshot(conn: apsw.Connection) -> Iterator[None]:
    """One read transaction: every query inside sees the same committed state (WAL).
    Inside another snapshot it is that one."""
    if conn.in_transaction:
        yield
        return
    with transaction(conn, "DEFERRED"):  # an error inside is raised, not hidden by the end
        yield


def list_stories(
    conn: apsw.Connection,
    stage: str | None = None,
    agent: str | None = None,
    blocked: bool | None = None,
) -> list[dict[str, Any]]:
    """Stories without content, in no particular order (`views.sort_stories` orders them)."""
    where: list[str] = []
    params: list[str | int] = []
    if stage is not None:
        where.append("stage = ?")
        params.append(stage)
    if agent is not None:
        where.append("agent = ?")
        params.append(agent)
    if blocked is not None:
        where.append("coalesce(blocked, 0) = ?")
        params.append(int(blocked))
    sql = f"SELECT {', '.join(ITEM_COLUMNS)} FROM pipeline_items"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_item(row) for row in conn.execute(sql, params)]


# The order of `ls` (views.sort_stories "stage"), in SQL: the stage's number (none:
# last), the stage, the story number (none: -1), the id. Migration 0006 indexes
# these very expressions (SQLite matches them as written: tests/test_queries.py
# checks the text and the plans); `page_key` is the same order in Python.
# Every id starts with digits and `_` (layout.is_story_name), so the number is its
# CAST, when it has at most MAX_NUMBER_DIGITS digits.
STAGE_NUMBER_SQL = ("(CASE WHEN stage GLOB '[0-9]*_*' AND substr(stage, 1, instr(stage, '_') - 1) "
                    f"NOT GLOB '*[^0-9]*' THEN CAST(stage AS INTEGER) ELSE {1 << 62} END)")
STORY_NUMBER_SQL = (f"(CASE WHEN instr(id, '_') <= {MAX_NUMBER_DIGITS + 1} "
                    "THEN CAST(id AS INTEGER) ELSE -1 END)")
_ORDER_KEY = f"{STAGE_NUMBER_SQL}, stage, {STORY_NUMBER_SQL}, id"
_IN_STAGE_KEY = f"{STORY_NUMBER_SQL}, id"


def iter_stories(conn: apsw.Connection, stage: str | None = None, agent: str | None = None,
                 blocked: bool | None = None) -> Iterator[dict[str, Any]]:
    """Stories without content in the order of `ls`, one at a time from SQLite (the
    index of migration 0006 gives the order): `ls --json` of 100,000 stories holds
    one row at a time, not the list."""
    for row in iter_columns(conn, ITEM_COLUMNS, stage=stage, agent=agent, blocked=blocked):
        yield _item(row)


def iter_columns(conn: apsw.Connection, columns: Sequence[str], stage: str | None = None,
                 agent: str | None = None, blocked: bool | None = None,
                 ) -> Iterator[tuple[Any, ...]]:
    """`columns` of ITEM_COLUMNS, as stored, of the stories `iter_stories` gives, in its
    order: the table `ls` prints needs no decoded row."""
    if not set(columns) <= set(ITEM_COLUMNS):
        raise ValueError(f"not a listed column: {sorted(set(columns) - set(ITEM_COLUMNS))}")
    where: list[str] = []
    params: list[str | int] = []
    for clause, value in (("stage = ?", stage), ("agent = ?", agent)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if blocked is not None:
        where.append("coalesce(blocked, 0) = ?")
        params.append(int(blocked))
    condition = " WHERE " + " AND ".join(where) if where else ""
    order = _IN_STAGE_KEY if stage is not None else _ORDER_KEY
    sql = f"SELECT {', '.join(columns)} FROM pipeline_items{condition} ORDER BY {order}"
    yield from conn.execute(sql, params)


def page_key(stage: str, story_id: str) -> tuple[int, str, int, str]:
    """A story's place in the order of `page_stories` (its stage and id as they were)."""
    stage_number = parse_number(stage.split("_", 1)[0]) if "_" in stage else None
    number = parse_number(story_id.split("_", 1)[0]) if "_" in story_id else None
    return (1 << 62 if stage_number is None else stage_number, stage,
            -1 if number is None else number, story_id)


def page_stories(conn: apsw.Connection, *, stage: str | None = None, agent: str | None = None,
                 unassigned: bool = False, blocked: bool | None = None,
                 kind: str | None = None, after: tuple[Any, ...] | None = None,
                 limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """A page of stories without content in the order of `ls`, after the story whose
    `page_key` is `after`; and how many match in all."""
    where: list[str] = []
    params: list[Any] = []
    for clause, value in (("stage = ?", stage), ("agent = ?", agent)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if unassigned:
        where.append("agent IS NULL")
    if blocked is not None:
        where.append("coalesce(blocked, 0) = ?")
        params.append(int(blocked))
    if kind is not None:  # the word after the number: `12_bug_crash` is a bug
        where.append("substr(id, instr(id, '_') + 1, ?) = ?")
        params += [len(kind) + 1, f"{kind}_"]
    condition = " WHERE " + " AND ".join(where) if where else ""
    (total,) = conn.execute(f"SELECT count(*) FROM pipeline_items{condition}", params)
    # In one stage the order is the story number's: index pipeline_items_in_stage.
    order, key = (_IN_STAGE_KEY, list(after or ())[2:]) if stage is not None else (
        _ORDER_KEY, list(after or ()))
    if after is not None:
        condition += (" AND " if condition else " WHERE ") + (
            f"({order}) > ({', '.join('?' * len(key))})")
        params += key
    sql = (f"SELECT {', '.join(ITEM_COLUMNS)} FROM pipeline_items{condition} "
           f"ORDER BY {order} LIMIT ?")
    return [_item(row) for row in conn.execute(sql, [*params, limit])], int(total[0])


def get_story(conn: apsw.Connection, story_id: str) -> dict[str, Any] | None:
    """One story: fields, content, extra keys, errors, files on disk (one snapshot)."""
    with snapshot(conn):
        return _get_story(conn, story_id)


def _get_story(conn: apsw.Connection, story_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {', '.join(ITEM_COLUMNS)}, content FROM pipeline_items WHERE id = ?",
        (story_id,),
    ).fetchone()
    if row is None:
        return None
    item = _item(row[:-1])
    item["content"] = row[-1]
    extra = conn.execute("SELECT extra, errors FROM story_extras WHERE id = ?",
                         (story_id,)).fetchone()
    item["extra"] = json_loads(extra[0]) if extra else {}
    item["errors"] = errors_from_column(extra[1] if extra else None)
    item["files"] = [
        {"path": path, "winner": bool(winner)} for path, winner in conn.execute(
            "SELECT path, winner FROM file_signatures WHERE story_id = ? "
            "ORDER BY winner DESC, path", (story_id,))
    ]
    return item


def stories_by_id(conn: apsw.Connection, ids: list[str]) -> list[dict[str, Any]]:
    """These stories without content (the ones that exist)."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found += [_item(row) for row in conn.execute(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM pipeline_items "
            f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk)]
    return found


def story_rows(conn: apsw.Connection) -> dict[str, dict[str, Any]]:
    """Every row's metadata, keyed by id (for doctor)."""
    return {item["id"]: item for item in list_stories(conn)}


def counts_by_stage(conn: apsw.Connection) -> dict[str, int]:
    return {str(stage): int(count) for stage, count in conn.execute(
        "SELECT stage, count(*) FROM pipeline_items GROUP BY stage ORDER BY stage")}


def meta(conn: apsw.Connection) -> dict[str, str]:
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM daemon_meta")}


def conflicts(conn: apsw.Connection) -> list[dict[str, Any]]:
    """Ids present in more than one stage: the followed file and the others."""
    found: dict[str, dict[str, Any]] = {}
    for story_id, path, winner in conn.execute(
        "SELECT story_id, path, winner FROM file_signatures WHERE story_id IN "
        "(SELECT story_id FROM file_signatures GROUP BY story_id HAVING count(*) > 1) "
        "ORDER BY story_id, path"
    ):
        entry = found.setdefault(story_id, {"id": story_id, "winner": None, "others": []})
        if winner:
            entry["winner"] = path
        else:
            entry["others"].append(path)
    return list(found.values())


def parse_errors(conn: apsw.Connection) -> list[dict[str, Any]]:
    """Stories whose file has an error, with the file followed ('<stage>/<id>.md')."""
    return [
        {"id": story_id, "path": path, "errors": errors_from_column(errors)}
        for story_id, path, errors in conn.execute(
            "SELECT e.id, s.path, e.errors FROM story_extras e "
            "LEFT JOIN file_signatures s ON s.story_id = e.id AND s.winner = 1 "
            "WHERE e.errors IS NOT NULL ORDER BY e.id")
    ]


def table_exists(conn: apsw.Connection, name: str) -> bool:
    """Whether the database has this table (virtual tables included): older databases
    lack what later migrations add, and a foreign file lacks everything."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def resolve_ref(conn: apsw.Connection, ref: str, *, deleted: bool = False) -> list[str]:
    """The ids a story reference names, sorted: the id itself if it has a row, or every
    id with that number when `ref` is a bare number (`12`, `012`).

    With `deleted`, ids known only from the history (deleted stories) count too.
    Callers decide what none or several mean (`show`: not found, ambiguous; `log`:
    all of them).
    """
    history = deleted and table_exists(conn, "story_history")
    number = parse_number(ref)
    if number is None:
        found = conn.execute("SELECT 1 FROM pipeline_items WHERE id = ?", (ref,)).fetchone()
        if found is None and history:
            found = conn.execute("SELECT 1 FROM story_history WHERE story_id = ? LIMIT 1",
                                 (ref,)).fetchone()
        return [ref] if found is not None else []
    pattern = f"{number}_*"
    ids = {str(r[0]) for r in conn.execute("SELECT id FROM pipeline_items WHERE id GLOB ?",
                                           (pattern,))}
    if history:
        ids |= {str(r[0]) for r in conn.execute(
            "SELECT DISTINCT story_id FROM story_history WHERE story_id GLOB ?", (pattern,))}
    return sorted(ids)


def high_water(conn: apsw.Connection) -> int:
    """The highest story number the daemon ever saw, deleted stories included (0 if none)."""
    if not table_exists(conn, "story_numbers"):
        return 0
    row = conn.execute("SELECT max(high_water) FROM story_numbers").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def story_stage(conn: apsw.Connection, story_id: str) -> str | None:
    """The stage the database shows for a story, or None if it has no row."""
    row = conn.execute("SELECT stage FROM pipeline_items WHERE id = ?", (story_id,)).fetchone()
    return str(row[0]) if row else None


def confirmed_by_daemon(db_path: StrPath, wait: Callable[[], bool]) -> bool | None:
    """After a file edit: whether the daemon holding the database showed it in time
    (`wait()` polls for it), or None when no daemon runs (nothing will sync it yet)."""
    if holder(db_path) is None:
        return None
    return wait()


def wait_for_stage(db_path: StrPath, story_id: str, stage: str, timeout_s: float,
                   poll_s: float = 0.05) -> bool:
    """Poll the database (read-only) until its row for `story_id` shows `stage` (a
    `move` waiting for a running daemon to sync its rename)."""
    return _wait_for(db_path, lambda conn: story_stage(conn, story_id) == stage,
                     timeout_s, poll_s)


def wait_for_fields(db_path: StrPath, story_id: str, fields: Mapping[str, Any], timeout_s: float,
                    poll_s: float = 0.02) -> bool:
    """Poll until the row for `story_id` holds `fields` (stored forms, as the story
    parser gives them): a `set` waiting for a running daemon to sync its edit."""
    names = list(fields)
    wanted = [to_column(name, fields[name]) for name in names]
    sql = f"SELECT {', '.join(names)} FROM pipeline_items WHERE id = ?"

    def holds(conn: apsw.Connection) -> bool:
        row = conn.execute(sql, (story_id,)).fetchone()
        return row is not None and list(row) == wanted

    return _wait_for(db_path, holds, timeout_s, poll_s)


def _wait_for(db_path: StrPath, holds: Callable[[apsw.Connection], bool], timeout_s: float,
              poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    conn = None
    try:
        while True:
            try:
                conn = conn or open_read_only(db_path)
                if holds(conn):
                    return True
            except (PipelinedError, apsw.Error):
                pass  # not created yet by a daemon that is starting: keep waiting
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
    finally:
        if conn is not None:
            conn.close()
