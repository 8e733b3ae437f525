"""The content map keeps in memory only the texts the writer has not committed yet.

A story's previous text decides what an edit changed (docs/design.md, rule 2).
Committed texts are read back from `pipeline_items.content`; until a batch is
committed, its texts must come from memory, or a later edit would be compared
with a text two versions old. Here the real writer cannot commit while another
connection holds the database's write lock (as a backup or a stray sqlite3
shell might): three changes to one story in that time must still come out
right, and once the lock goes, the texts leave memory and come from the rows.
"""

from __future__ import annotations

from pathlib import Path

import apsw
from conftest import DEADLINE_S, Stories, story_text

from pipelined.config import resolve
from pipelined.outcome import Outcome
from pipelined.startup import Startup
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.writer import Writer


def start(stories: Stories, db: Path) -> tuple[Startup, Writer]:
    conn = open_writer(db)
    apply_migrations(conn, db)
    conn.close()
    writer = Writer(lambda: open_writer(db), 8, path=db, outcome=Outcome())
    writer.start()
    config = resolve({"root": stories.root, "db": db}, env={})
    return Startup(config, stories.root, db, writer, lambda _n: None), writer


def test_texts_wait_in_memory_until_committed(tmp_path: Path) -> None:
    stories = Stories(tmp_path / "root")
    path = stories.write("1_backlog", "1_story_a", text=story_text("a", retry_count=3))
    db = tmp_path / "p.db"
    startup, writer = start(stories, db)
    try:
        reconciler = startup.run().reconciler
        content = reconciler.content
        assert content.pending() == 0  # the first import is committed

        blocker = apsw.Connection(str(db))
        blocker.set_busy_timeout(int(DEADLINE_S * 1000))  # the writer may be merging
        blocker.execute("BEGIN IMMEDIATE")  # the writer's commits now wait and retry
        try:
            # 1. The file sets retry_count 5.
            path.write_text(story_text("a", retry_count=5), encoding="utf-8")
            seq = writer.submit(reconciler.reconcile({"1_story_a"}, confirm_absent=False).batch)
            # 2. A move: the state's retry_count is reset to 0 (the file still says 5).
            stories.move("1_story_a", "1_backlog", "2_current")
            moved = stories.path("2_current", "1_story_a")
            seq = writer.submit(reconciler.reconcile({"1_story_a"}, confirm_absent=False).batch)
            # 3. Only the body changes. Compared with the text of step 1 (in memory, not
            # committed), no field changed: the reset stays. Compared with the committed
            # text (retry_count 3), retry_count would seem set to 5 again.
            moved.write_text(story_text("a", retry_count=5, body="new body\n"),
                             encoding="utf-8")
            seq = writer.submit(reconciler.reconcile({"1_story_a"}, confirm_absent=False).batch)
            assert reconciler.state.get("1_story_a")["retry_count"] == 0  # type: ignore[index]
            assert writer.committed < seq and content.pending() == 1
            assert content.texts(["1_story_a"]) == {"1_story_a": moved.read_text("utf-8")}
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert writer.wait_committed(seq, timeout=DEADLINE_S)
        assert content.pending() == 0  # out of memory, read from the row
        assert content.texts(["1_story_a"]) == {"1_story_a": moved.read_text("utf-8")}
        row = apsw.Connection(str(db)).execute(
            "SELECT stage, retry_count FROM pipeline_items WHERE id = '1_story_a'").fetchone()
        assert row == ("2_current", 0)
    finally:
        writer.close(DEADLINE_S)


def test_a_deleted_story_has_no_text(tmp_path: Path) -> None:
    """A delete not yet committed hides the row's text; once committed, the row is gone."""
    stories = Stories(tmp_path / "root")
    path = stories.write("1_backlog", "1_story_a", name="a")
    db = tmp_path / "p.db"
    startup, writer = start(stories, db)
    try:
        reconciler = startup.run().reconciler
        path.unlink()
        blocker = apsw.Connection(str(db))
        blocker.set_busy_timeout(int(DEADLINE_S * 1000))  # the writer may be merging
        blocker.execute("BEGIN IMMEDIATE")
        try:
            seq = writer.submit(reconciler.reconcile({"1_story_a"}, confirm_absent=True).batch)
            assert reconciler.content.texts(["1_story_a"]) == {}
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert writer.wait_committed(seq, timeout=DEADLINE_S)
        assert reconciler.content.texts(["1_story_a"]) == {}
        assert reconciler.content.pending() == 0
    finally:
        writer.close(DEADLINE_S)
