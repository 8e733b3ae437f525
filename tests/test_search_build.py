"""A first import's search index, built in slices between the writer's batches: real
SQLite, the real writer thread, and FTS5's own integrity check (against the rows) as
the judge of every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import wait_until

from pipelined.outcome import Outcome
from pipelined.store import search_build
from pipelined.store.batch import Batch, RowUpsert
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.search_build import SEARCH_CURSOR, SEARCH_SUSPENDED, build_search_slice
from pipelined.store.writer import Writer, write_batches

FIELDS = {"name": None, "agent": None, "retry_count": 0, "blocked": False,
          "depends_on": None}


def row(n: int, text: str) -> RowUpsert:
    return RowUpsert(f"{n}_story_s", "1_backlog", {**FIELDS, "name": f"story {n}"},
                     text, {}, ())


def imported(db: Path, count: int) -> tuple[apsw.Connection, list[tuple[str, str]]]:
    """A database a first import of `count` rows left: rows in, index owed; and the
    real triggers as the migrations made them."""
    conn = open_writer(db)
    apply_migrations(conn, db)
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND name LIKE 'pipeline_search%' ORDER BY name").fetchall()
    write_batches(conn, [Batch(upserts=[row(n, f"alpha word{n}") for n in range(count)],
                               search_index="suspend")])
    return conn, triggers


def consistent(conn: apsw.Connection) -> None:
    """FTS5's integrity check, with the rows: raises when the index disagrees (a row
    indexed twice, a stale entry, one missing). Only once no build runs: a build's
    index holds only the rows it has passed."""
    conn.execute("INSERT INTO pipeline_search(pipeline_search, rank) "
                 "VALUES ('integrity-check', 1)")


def agrees_so_far(conn: apsw.Connection) -> None:
    """Mid-build: the index equals the rows the build has passed (rowid below the
    cursor). Judged on a copy without the others, by the same integrity check."""
    copy = apsw.Connection(":memory:")
    with copy.backup("main", conn, "main") as backup:
        backup.step()
    cursor = meta(copy, SEARCH_CURSOR)
    if cursor is not None:  # their guarded delete trigger leaves the index alone
        copy.execute("DELETE FROM pipeline_items WHERE rowid >= ?", (int(cursor),))
    consistent(copy)
    copy.close()


def hits(conn: apsw.Connection, query: str) -> list[str]:
    return sorted(str(r[0]) for r in conn.execute(
        "SELECT id FROM pipeline_search WHERE pipeline_search MATCH ?", (query,)))


def meta(conn: apsw.Connection, key: str) -> Any:
    found = conn.execute("SELECT value FROM daemon_meta WHERE key = ?", (key,)).fetchone()
    return None if found is None else found[0]


class TestSlices:
    def test_changes_between_slices_are_indexed_once(self, tmp_path: Path) -> None:
        """Edits of rows the build has passed and of rows it has not, a delete and a new
        row, between slices of 7: the index agrees with the rows at every step, finds
        what they say at the end, and the real triggers are back."""
        conn, triggers = imported(tmp_path / "p.db", 40)
        write_batches(conn, [Batch(search_index="resume")])
        assert meta(conn, SEARCH_CURSOR) == "0" and meta(conn, SEARCH_SUSPENDED)
        assert hits(conn, "alpha") == []  # emptied: built anew
        assert not build_search_slice(conn, rows=7)
        assert not build_search_slice(conn, rows=7)  # rows 1-14 indexed
        agrees_so_far(conn)
        assert len(hits(conn, "alpha")) == 14
        write_batches(conn, [Batch(upserts=[row(3, "beta passed"), row(30, "beta ahead"),
                                            row(99, "beta new")],
                                   deletes=["5_story_s", "35_story_s"])])
        agrees_so_far(conn)
        assert hits(conn, "beta") == ["3_story_s"]  # the others wait for their slice
        done = False
        while not done:
            done = build_search_slice(conn, rows=7)
            agrees_so_far(conn)
        consistent(conn)
        assert meta(conn, SEARCH_CURSOR) is None and meta(conn, SEARCH_SUSPENDED) is None
        assert hits(conn, "beta") == ["30_story_s", "3_story_s", "99_story_s"]
        assert hits(conn, "word5") == hits(conn, "word35") == hits(conn, "word3") == []
        assert len(hits(conn, "alpha")) == 40 - 2 - 2  # deleted, and rewritten as beta
        assert conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND name LIKE 'pipeline_search%' ORDER BY name"
                            ).fetchall() == triggers
        write_batches(conn, [Batch(upserts=[row(7, "gamma after")])])  # the real triggers
        consistent(conn)
        assert hits(conn, "gamma") == ["7_story_s"]

    def test_a_build_cut_short_goes_on_from_its_cursor(self, tmp_path: Path) -> None:
        """A crash after a few slices leaves the note, the cursor and the guarded
        triggers; the next start's catch-up writes under them, and its "resume" goes
        on from the cursor instead of starting over."""
        conn, triggers = imported(tmp_path / "p.db", 30)
        write_batches(conn, [Batch(search_index="resume")])
        assert not build_search_slice(conn, rows=10)
        cursor = meta(conn, SEARCH_CURSOR)
        assert cursor not in (None, "0")
        conn.close()  # the crash
        conn = open_writer(tmp_path / "p.db")
        write_batches(conn, [Batch(upserts=[row(2, "delta old"), row(25, "delta new")])])
        agrees_so_far(conn)
        write_batches(conn, [Batch(search_index="resume")])
        assert meta(conn, SEARCH_CURSOR) == cursor  # not started over
        while not build_search_slice(conn, rows=10):
            agrees_so_far(conn)
        consistent(conn)
        assert hits(conn, "delta") == ["25_story_s", "2_story_s"]
        assert meta(conn, SEARCH_SUSPENDED) is None
        assert conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND name LIKE 'pipeline_search%' ORDER BY name"
                            ).fetchall() == triggers

    def test_a_cursor_without_the_guarded_triggers_starts_over(self, tmp_path: Path) -> None:
        """A cursor the triggers do not match (not a build this code cut short): the
        build starts over from an empty index rather than trust it."""
        conn, _triggers = imported(tmp_path / "p.db", 20)
        conn.execute("INSERT INTO daemon_meta(key, value) VALUES (?, '7')", (SEARCH_CURSOR,))
        write_batches(conn, [Batch(search_index="resume")])
        assert meta(conn, SEARCH_CURSOR) == "0"
        while not build_search_slice(conn, rows=6):
            agrees_so_far(conn)
        consistent(conn)

    def test_a_first_import_after_a_build_cut_short_keeps_the_real_triggers(
            self, tmp_path: Path) -> None:
        """Guarded triggers and the note left by a build cut short, every story deleted,
        then a first import: its suspension keeps the note (the real triggers, not
        the guarded ones) and stops the old build; the new build ends with the real
        triggers, which go on indexing."""
        conn, triggers = imported(tmp_path / "p.db", 30)
        write_batches(conn, [Batch(search_index="resume")])
        assert not build_search_slice(conn, rows=10)
        write_batches(conn, [Batch(deletes=[f"{n}_story_s" for n in range(30)])])
        write_batches(conn, [Batch(upserts=[row(n, f"eta word{n}") for n in range(40, 60)],
                                   search_index="suspend")])
        assert meta(conn, SEARCH_CURSOR) is None  # the old build stopped with it
        assert build_search_slice(conn)  # nothing to go on with
        write_batches(conn, [Batch(search_index="resume")])
        while not build_search_slice(conn, rows=6):
            agrees_so_far(conn)
        assert conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND name LIKE 'pipeline_search%' ORDER BY name"
                            ).fetchall() == triggers
        write_batches(conn, [Batch(upserts=[row(41, "theta later"), row(70, "theta new")])])
        consistent(conn)
        assert hits(conn, "theta") == ["41_story_s", "70_story_s"]
        assert len(hits(conn, "eta")) == 19  # 40-59, but 41

    def test_a_slice_is_no_sync(self, tmp_path: Path) -> None:
        """`last_sync` (status, the freshness notes) moves with batches, not slices."""
        conn, _triggers = imported(tmp_path / "p.db", 20)
        write_batches(conn, [Batch(search_index="resume")])
        conn.execute("UPDATE daemon_meta SET value = 'then' WHERE key = 'last_sync'")
        write_batches(conn, [Batch(search_index="slice")])
        assert meta(conn, "last_sync") == "then"
        write_batches(conn, [Batch(upserts=[row(1, "iota")])])
        assert meta(conn, "last_sync") != "then"

    def test_no_build_is_nothing_to_do(self, tmp_path: Path) -> None:
        conn = open_writer(tmp_path / "p.db")
        apply_migrations(conn, tmp_path / "p.db")
        assert build_search_slice(conn)
        write_batches(conn, [Batch(search_index="resume")])  # nothing owed: no build
        assert meta(conn, SEARCH_CURSOR) is None


class TestTheWriterBuildsBetweenBatches:
    def test_an_edit_does_not_wait_for_the_whole_build(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The build runs in slices when nothing else waits: an edit queued behind its
        start is committed first, the slices go on after it, and the index ends up
        agreeing with the rows, the edit included."""
        db = tmp_path / "p.db"
        conn, _triggers = imported(db, 2000)
        conn.close()
        monkeypatch.setattr(search_build, "SEARCH_SLICE_ROWS", 5)  # 400 slices
        writer = Writer(lambda: open_writer(db), 8, path=db, outcome=Outcome())
        writer.start()
        writer.begin()
        reader = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        reader.set_busy_timeout(5000)  # the writer commits slices meanwhile
        try:
            writer.submit(Batch(search_index="resume"))
            wait_until(lambda: int(meta(reader, SEARCH_CURSOR) or 0) > 0,
                       what="the build's first slices")
            edit = writer.submit(Batch(upserts=[row(1500, "epsilon edited")]))
            assert writer.wait_committed(edit)
            # 400 slices of 5: the edit went in with most of them still to come.
            assert meta(reader, SEARCH_CURSOR) is not None
            wait_until(lambda: meta(reader, SEARCH_SUSPENDED) is None, what="the build")
        finally:
            reader.close()
            writer.close(30)
        conn = open_writer(db)
        consistent(conn)
        assert hits(conn, "epsilon") == ["1500_story_s"]
        assert len(hits(conn, "alpha")) == 1999
