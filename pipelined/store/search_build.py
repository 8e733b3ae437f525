"""A first import's search index: suspended during the import, then built in slices
between the writer's batches (docs/design.md, "The search index on a first import");
and the merging of the index's segments, in slices while the writer is idle (the
next section there).

Each function runs inside the writer's transaction (`writer.write_batches`):
`suspend_search_index` before a batch's rows, `start_search_build` or
`build_search_slice` after them, as `search_step` dispatches.
"""

from __future__ import annotations

import json

import apsw

__all__ = [
    "BUILDING_TRIGGERS",
    "MERGE_PAGES",
    "SEARCH_CURSOR",
    "SEARCH_SLICE_ROWS",
    "SEARCH_SUSPENDED",
    "build_search_slice",
    "merge_search_slice",
    "search_step",
    "start_search_build",
    "suspend_search_index",
]

SEARCH_SUSPENDED = "search_suspended"  # daemon_meta: the triggers' SQL while suspended
SEARCH_CURSOR = "search_build_cursor"  # daemon_meta: the next rowid a sliced build indexes
SEARCH_SLICE_ROWS = 500  # rows a slice of the build indexes in one transaction
# Pages of merged segments one idle slice writes (FTS5 'merge'; it stops only between
# terms, so at least one term's doclist): 1-10 ms at 10,000 stories, up to ~30 at
# 100,000, which is as long as a batch may wait behind one.
MERGE_PAGES = 32

# While the index is built in slices (build_search_slice), the triggers keep it for
# the rows the build has passed (rowid < the cursor) and leave the others to it: a
# row changed meanwhile is indexed once, as it is when its slice or its change comes.
# The same three as migration 0004's, each statement guarded by the cursor.
_CURSOR = f"(SELECT CAST(value AS INTEGER) FROM daemon_meta WHERE key = '{SEARCH_CURSOR}')"
BUILDING_TRIGGERS = (
    f"""CREATE TRIGGER pipeline_search_ai AFTER INSERT ON pipeline_items BEGIN
  INSERT INTO pipeline_search(rowid, id, name, content)
  SELECT new.rowid, new.id, new.name, new.content WHERE new.rowid < {_CURSOR};
END""",
    f"""CREATE TRIGGER pipeline_search_ad AFTER DELETE ON pipeline_items BEGIN
  INSERT INTO pipeline_search(pipeline_search, rowid, id, name, content)
  SELECT 'delete', old.rowid, old.id, old.name, old.content WHERE old.rowid < {_CURSOR};
END""",
    f"""CREATE TRIGGER pipeline_search_au AFTER UPDATE ON pipeline_items
WHEN old.id IS NOT new.id OR old.name IS NOT new.name OR old.content IS NOT new.content
  OR old.rowid IS NOT new.rowid
BEGIN
  INSERT INTO pipeline_search(pipeline_search, rowid, id, name, content)
  SELECT 'delete', old.rowid, old.id, old.name, old.content WHERE old.rowid < {_CURSOR};
  INSERT INTO pipeline_search(rowid, id, name, content)
  SELECT new.rowid, new.id, new.name, new.content WHERE new.rowid < {_CURSOR};
END""",
)


def _search_triggers(conn: apsw.Connection) -> list[tuple[str, str]]:
    return [(str(name), str(sql)) for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name = 'pipeline_items' AND name LIKE 'pipeline_search%'")]


def suspend_search_index(conn: apsw.Connection) -> None:
    """Stop indexing row by row: the search index's triggers are dropped, their SQL kept
    in daemon_meta in the same transaction (a crash mid-import leaves a note the next
    start resumes from: nothing but the uncommitted chunk is lost). A note already
    there holds the real triggers: it is kept."""
    triggers = _search_triggers(conn)
    if not triggers:  # suspended already (a resumed import), or no index (before 0004)
        return
    if conn.execute("SELECT 1 FROM daemon_meta WHERE key = ?",
                    (SEARCH_SUSPENDED,)).fetchone() is None:
        conn.execute("INSERT INTO daemon_meta(key, value) VALUES (?, ?)",
                     (SEARCH_SUSPENDED, json.dumps(triggers)))
    for name, _sql in triggers:
        conn.execute(f'DROP TRIGGER "{name}"')
    # A build under way stops here (its slices would index without triggers): the
    # next "resume" starts it over.
    conn.execute("DELETE FROM daemon_meta WHERE key = ?", (SEARCH_CURSOR,))


def start_search_build(conn: apsw.Connection) -> None:
    """Begin building the search index from every row, in slices the writer commits
    between batches (build_search_slice): an empty index, the cursor at the first
    row, the cursor-guarded triggers. A build cut short (a crash, a stop) goes on
    from its cursor: its index holds the rows below it, whatever was written
    since, as the guarded triggers kept it. The note stays until the last slice."""
    if conn.execute("SELECT 1 FROM daemon_meta WHERE key = ?",
                    (SEARCH_SUSPENDED,)).fetchone() is None:
        return
    cut_short = conn.execute("SELECT 1 FROM daemon_meta WHERE key = ?",
                             (SEARCH_CURSOR,)).fetchone() is not None
    if cut_short and {sql for _name, sql in _search_triggers(conn)} == set(BUILDING_TRIGGERS):
        return
    for name, _sql in _search_triggers(conn):  # the guarded ones of a build cut short
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute("INSERT INTO pipeline_search(pipeline_search) VALUES ('delete-all')")
    conn.execute("INSERT OR REPLACE INTO daemon_meta(key, value) VALUES (?, '0')",
                 (SEARCH_CURSOR,))
    for sql in BUILDING_TRIGGERS:
        conn.execute(sql)


def build_search_slice(conn: apsw.Connection, rows: int | None = None) -> bool:
    """Index the next `rows` rows from the cursor; with the last, put the real triggers
    back and drop the note and the cursor. True once the build is over (or none runs)."""
    cursor = conn.execute("SELECT CAST(value AS INTEGER) FROM daemon_meta WHERE key = ?",
                          (SEARCH_CURSOR,)).fetchone()
    if cursor is None:
        return True
    end = conn.execute("SELECT rowid FROM pipeline_items WHERE rowid >= ? ORDER BY rowid "
                       "LIMIT 1 OFFSET ?", (cursor[0], rows or SEARCH_SLICE_ROWS)).fetchone()
    bounds = "rowid >= ?" + ("" if end is None else " AND rowid < ?")
    conn.execute("INSERT INTO pipeline_search(rowid, id, name, content) SELECT rowid, id, "
                 f"name, content FROM pipeline_items WHERE {bounds} ORDER BY rowid",
                 (cursor[0],) if end is None else (cursor[0], end[0]))
    if end is not None:
        conn.execute("UPDATE daemon_meta SET value = ? WHERE key = ?", (str(end[0]),
                                                                          SEARCH_CURSOR))
        return False
    note = conn.execute("SELECT value FROM daemon_meta WHERE key = ?",
                        (SEARCH_SUSPENDED,)).fetchone()
    for name, _sql in _search_triggers(conn):
        conn.execute(f'DROP TRIGGER "{name}"')
    for _name, sql in json.loads(note[0]) if note is not None else ():
        conn.execute(sql)
    conn.execute("DELETE FROM daemon_meta WHERE key IN (?, ?)", (SEARCH_SUSPENDED, SEARCH_CURSOR))
    return True


def search_step(conn: apsw.Connection, step: str | None, *, before_rows: bool) -> None:
    """A batch's step of the search index: "suspend" before its rows, "resume" (start
    a build) or "slice" (go on with it) after them."""
    if before_rows:
        if step == "suspend":
            suspend_search_index(conn)
    elif step == "resume":
        start_search_build(conn)
    elif step == "slice":
        build_search_slice(conn)


def merge_search_slice(conn: apsw.Connection) -> bool:
    """Merge about MERGE_PAGES pages of the search index's segments, in the caller's
    transaction; True if it did (more may remain), False once nothing is left to merge.

    Migration 0009 turned FTS5's automerge off: commits add segments (one for each
    statement that indexes a row; `crisismerge` still merges 16 on a level at once)
    and the writer merges them with this between batches. Only levels holding
    `usermerge` (4) segments or more are merged, as automerge did.
    """
    before = conn.total_changes()
    conn.execute("INSERT INTO pipeline_search(pipeline_search, rank) VALUES ('merge', ?)",
                 (MERGE_PAGES,))
    return conn.total_changes() - before >= 2  # FTS5's documented sign of work done
