"""The search index's segments are merged by the writer while it is idle, not inside
the commits that index rows (migration 0009; store/search_build.py
`merge_search_slice`). Real SQLite files, the real writer thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DEADLINE_S, Stories, wait_until
from test_writer_errors import fresh_db

from pipelined.config import resolve
from pipelined.errors import DatabaseCorrupt
from pipelined.maintenance import rebuild
from pipelined.store.batch import Batch, RowUpsert
from pipelined.store.connection import open_read_only, open_writer
from pipelined.store.search import search
from pipelined.store.search_build import SEARCH_SLICE_ROWS
from pipelined.store.writer import Writer

FIELDS = {"agent": None, "retry_count": 0, "blocked": None, "depends_on": None}
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def row(number: int, word: str) -> RowUpsert:
    story_id = f"{number}_story_{word}"
    text = f"---\nname: {word} {number}\n---\n{word} " + "lorem ipsum dolor " * 40
    return RowUpsert(story_id=story_id, stage="1_backlog",
                     fields={"name": f"{word} {number}", **FIELDS},
                     content=text, extra={}, errors=())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return fresh_db(tmp_path)


@pytest.fixture
def writer(db: Path) -> Iterator[Writer]:
    writer = Writer(lambda: open_writer(db), 8, path=db)
    writer.start()
    yield writer
    writer.close(DEADLINE_S)


def commit_apart(writer: Writer, batches: int) -> None:
    """`batches` commits of 20 rows, each waited for (FTS5 adds a segment for each
    statement that indexes a row: 20 each)."""
    for n in range(batches):
        seq = writer.submit(Batch(upserts=[row(100 * n + k, WORDS[k % len(WORDS)])
                                           for k in range(20)]))
        assert writer.wait_committed(seq, DEADLINE_S)


def merge_left(db: Path) -> bool:
    """Whether FTS5 still finds segments to merge (its own 'merge' command, on another
    connection, in a transaction rolled back: the database is left as it was)."""
    conn = apsw.Connection(str(db))
    conn.set_busy_timeout(int(DEADLINE_S * 1000))
    try:
        conn.execute("BEGIN IMMEDIATE")
        before = conn.total_changes()
        conn.execute("INSERT INTO pipeline_search(pipeline_search, rank) VALUES ('merge', 8)")
        return conn.total_changes() - before >= 2
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = open_read_only(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_migration_turns_automerge_off(db: Path) -> None:
    assert query(db, "SELECT v FROM pipeline_search_config WHERE k = 'automerge'") == [(0,)]


def test_commits_leave_segments_that_the_idle_writer_merges(db: Path) -> None:
    """Without the writer, commits of rows leave segments to merge (automerge is off);
    the writer, once idle, merges until FTS5 finds nothing left."""
    writer = Writer(lambda: open_writer(db), 8, path=db)
    writer.start()
    try:
        commit_apart(writer, 6)
        wait_until(lambda: not writer.merging_search, what="the idle merging")
        assert not merge_left(db)
    finally:
        writer.close(DEADLINE_S)
    # The same commits on a connection of our own, with no writer to merge after them.
    conn = open_writer(db)
    try:
        for n in range(6):
            with conn:
                conn.execute("UPDATE pipeline_items SET content = content || ? "
                             "WHERE rowid % 6 = ?", (f" more {n}", n))
    finally:
        conn.close()
    assert merge_left(db)


def test_search_finds_every_row_after_merging(db: Path, writer: Writer) -> None:
    """The merged index agrees with the rows (FTS5's own check, against the content
    table) and finds what it should."""
    commit_apart(writer, 6)
    wait_until(lambda: not writer.merging_search, what="the idle merging")
    check = apsw.Connection(str(db))  # a command, written as an INSERT: not read-only
    try:
        check.execute("INSERT INTO pipeline_search(pipeline_search, rank) "
                      "VALUES ('integrity-check', 1)")
    finally:
        check.close()
    conn = open_read_only(db)
    try:
        hits = search(conn, "charlie", limit=None)
        rows = conn.execute("SELECT count(*) FROM pipeline_items WHERE name LIKE 'charlie%'"
                            ).fetchall()
    finally:
        conn.close()
    assert rows == [(6 * 3,)]
    assert {hit.id for hit in hits} == {f"{100 * n + k}_story_charlie"
                                        for n in range(6) for k in (2, 10, 18)}


def test_a_merge_a_busy_database_holds_off_is_one_warning(
        db: Path, log_events: Callable[[], list[dict[str, Any]]]) -> None:
    """Another program's write lock (as a commit would, the merge waits out the busy
    timeout): one warning, no retry until the next commit of rows, no stop. The
    slice is called as the writer's loop calls it, while the lock is held."""
    writer = Writer(lambda: open_writer(db), 8, path=db)
    conn = open_writer(db)
    conn.set_busy_timeout(10)
    writer._conn = conn  # the writer's connection, its thread not started
    other = apsw.Connection(str(db))
    try:
        other.execute("BEGIN IMMEDIATE")
        assert writer._merge_search_slice() is False
        other.execute("ROLLBACK")
    finally:
        other.close()
        conn.close()
    assert writer.first_error is None
    (failed,) = [e for e in log_events() if e["event"] == "writer.search_merge_failed"]
    assert failed["error"].startswith("BusyError")


def test_the_index_a_first_import_builds_is_merged(db: Path, writer: Writer) -> None:
    """A first import suspends the index and builds it in slices after READY (rows are
    committed before, none after): the segments the slices add (one a slice, four
    slices of SEARCH_SLICE_ROWS here) are merged too."""
    for n in range(4):  # each chunk committed, then an idle writer (nothing to merge)
        batch = Batch(upserts=[row(1000 * n + k, WORDS[k % len(WORDS)])
                               for k in range(SEARCH_SLICE_ROWS)])
        batch.search_index = "suspend" if n == 0 else None
        assert writer.wait_committed(writer.submit(batch), DEADLINE_S)
        wait_until(lambda: not writer.merging_search, what="the idle writer")
    assert writer.wait_committed(writer.submit(Batch(search_index="resume")), DEADLINE_S)

    def built_and_merged() -> bool:
        owed = query(db, "SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'")
        return not owed and not writer.merging_search

    wait_until(built_and_merged, what="the build, then its merging")
    assert not merge_left(db)


def test_damage_a_merge_finds_stops_the_writer(db: Path) -> None:
    """A damaged segment read by an idle merge stops the writer with DatabaseCorrupt
    (one line naming rebuild), as a commit reading it would, not a warning a time."""
    conn = open_writer(db)
    try:
        for n in range(3):  # three segments, one row each
            with conn:
                conn.execute("INSERT INTO pipeline_items(id, stage, name, content, created_at, "
                             "updated_at) VALUES (?, '1_backlog', ?, ?, 'x', 'x')",
                             (f"{n + 1}_story_s", f"s{n}", f"c{n} lorem"))
        (leaf,) = conn.execute("SELECT min(id) FROM pipeline_search_data WHERE id > 10"
                               ).fetchall()[0]
        conn.execute("UPDATE pipeline_search_data SET block = zeroblob(50) || x'ffffffff' "
                     "WHERE id = ?", (leaf,))
    finally:
        conn.close()
    writer = Writer(lambda: open_writer(db), 8, path=db)
    writer.start()
    try:  # one row: a fourth segment, which the commit adds and the merge reads
        assert writer.wait_committed(writer.submit(Batch(upserts=[row(50, "alpha")])),
                                     DEADLINE_S)
        wait_until(lambda: not writer.is_alive(), what="the writer to stop")
    finally:
        writer.close(DEADLINE_S)
    assert isinstance(writer.first_error, DatabaseCorrupt)
    assert "pipelined rebuild" in str(writer.first_error)


def test_a_rebuild_leaves_the_index_merged(stories: Stories, tmp_path: Path) -> None:
    """`pipelined rebuild` merges what its one big commit left, as the daemon's writer
    would once idle: a daemon that starts on it finds nothing changed, commits no
    rows, and would otherwise never be asked to merge."""
    for number in range(1, 201):
        word = WORDS[number % len(WORDS)]
        stories.write("1_backlog", f"{number}_story_{word}",
                      text=f"---\nname: {word} {number}\n---\n{word} " + "lorem ipsum " * 40)
    db = tmp_path / "rebuilt.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    assert not merge_left(db)
    conn = open_read_only(db)
    try:
        assert len(search(conn, "charlie", limit=500)) == 25
    finally:
        conn.close()
