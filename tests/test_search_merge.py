"""The search index's segments are merged by the writer while it is idle, not inside
the commits that index rows (migration 0009; store/search_build.py
`merge_search_slice`). Real SQLite files, the real writer thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DEADLINE_S, wait_until
from test_writer_errors import fresh_db

from pipelined.store.batch import Batch, RowUpsert
from pipelined.store.connection import open_read_only, open_writer
from pipelined.store.search import search
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
    """`batches` commits of rows, each waited for: one new segment of the index each."""
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


def test_the_migration_turns_automerge_off(db: Path) -> None:
    conn = open_read_only(db)
    try:
        value = conn.execute("SELECT v FROM pipeline_search_config WHERE k = 'automerge'"
                             ).fetchall()
    finally:
        conn.close()
    assert value == [(0,)]


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
    commit_apart(writer, 6)
    wait_until(lambda: not writer.merging_search, what="the idle merging")
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


def test_a_merge_that_fails_is_logged_and_the_writer_goes_on(
        db: Path, log_events: Callable[[], list[dict[str, Any]]]) -> None:
    """With the index gone (dropped by another program), a commit of rows still lands
    and its merge fails: one warning, no retry loop, the next batch committed."""
    conn = open_writer(db)
    try:
        for name in ("pipeline_search_ai", "pipeline_search_ad", "pipeline_search_au"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE pipeline_search")
    finally:
        conn.close()
    writer = Writer(lambda: open_writer(db), 8, path=db)
    writer.start()
    try:
        commit_apart(writer, 1)
        wait_until(lambda: not writer.merging_search, what="the merge to give up")
        commit_apart(writer, 1)
        wait_until(lambda: not writer.merging_search, what="the merge to give up again")
        assert writer.is_alive() and writer.first_error is None
    finally:
        writer.close(DEADLINE_S)
    failed = [e for e in log_events() if e["event"] == "writer.search_merge_failed"]
    assert len(failed) == 2 and "no such table" in failed[0]["error"]
