"""`Startup` in-process: real files, a real SQLite file and writer thread, real pycrdt,
and a scripted clock (the way the Coalescer and the policies are tested)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import Stories

from pipelined.config import Config, resolve
from pipelined.errors import CommitFailed
from pipelined.outcome import Outcome
from pipelined.startup import Started, Startup, StartupStopped
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.writer import Writer
from pipelined.survey import Survey


class ScriptedClock:
    """Each call returns the next time; the last one repeats."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def rows(db: Path) -> dict[str, tuple[str, str]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        # The writer may be merging the search index meanwhile: a read can meet a
        # moment of SQLITE_BUSY (seen under load), as the product's readers wait out.
        conn.set_busy_timeout(5000)
        return {sid: (stage, name) for sid, stage, name
                in conn.execute("SELECT id, stage, name FROM pipeline_items")}
    finally:
        conn.close()


class Run:
    """One start-up against `db`: what it told (`in_sync`: the story count and the
    rows committed at that moment) and what it returned."""

    def __init__(self, stories: Stories, db: Path) -> None:
        self.stories = stories
        self.db = db
        self.config: Config = resolve({"root": stories.root, "db": db}, env={})
        self.in_sync: list[tuple[int, dict[str, tuple[str, str]]]] = []
        self.outcome = Outcome()

    def __call__(self, clock: Callable[[], float] | None = None,
                 writer: Writer | None = None, survey: Survey | None = None,
                 paths_ok: Callable[[], bool] | None = None) -> Started:
        conn = open_writer(self.db)
        apply_migrations(conn, self.db)
        conn.close()
        self.in_sync.clear()
        writer = writer or Writer(lambda: open_writer(self.db), 4, path=self.db,
                                  outcome=self.outcome)
        writer.start()
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        if survey is not None:
            kwargs["survey"] = survey
        if paths_ok is not None:
            kwargs["paths_ok"] = paths_ok
        startup = Startup(self.config, self.stories.root, self.db, writer,
                          lambda n: self.in_sync.append((n, rows(self.db))), **kwargs)
        try:
            return startup.run()
        finally:
            writer.close(30)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "1_story_a", name="a")
    stories.write("2_current", "2_story_b", name="b")
    stories.write("4_merge", "3_story_c", name="c")
    return Run(stories, tmp_path / "p.db")


class TestInSync:
    def test_first_import_is_in_sync_only_once_committed(self, run: Run) -> None:
        """A first import tells `in_sync` once, after every row is committed."""
        started = run()
        assert [n for n, _rows in run.in_sync] == [3]
        assert run.in_sync[0][1] == {"1_story_a": ("1_backlog", "a"),
                                     "2_story_b": ("2_current", "b"),
                                     "3_story_c": ("4_merge", "c")}
        assert len(started.reconciler.state) == 3

    def test_no_text_stays_in_memory_once_the_catch_up_is_committed(self, run: Run) -> None:
        """The catch-up's texts are read from the rows once it is committed: none is
        left in memory until the next burst (they were, 10 MB at 10,000 stories)."""
        started = run()
        content = started.reconciler.content
        assert content._pending == {}  # not pending(): that call forgets them itself
        assert content.texts(["2_story_b"]) == {
            "2_story_b": run.stories.path("2_current", "2_story_b").read_text(encoding="utf-8")}

    def test_unchanged_restart_is_in_sync_before_the_state_loads(
            self, run: Run, log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """Nothing changed: `in_sync` comes from the stat pass alone; the state is loaded
        all the same, and every text is read from the rows, none held in memory."""
        run()
        log_events()
        started = run()
        assert [n for n, _rows in run.in_sync] == [3]
        (line,) = [e for e in log_events() if e["event"] == "daemon.startup"]
        assert line["ready_before_load"] is True and line["files_reread"] == 0
        content = started.reconciler.content
        assert content.pending() == 0
        assert content.texts(["1_story_a", "2_story_b", "3_story_c", "9_story_none"]) == {
            story_id: run.stories.path(stage, story_id).read_text(encoding="utf-8")
            for stage, story_id in (("1_backlog", "1_story_a"), ("2_current", "2_story_b"),
                                    ("4_merge", "3_story_c"))}

    def test_an_edit_while_stopped_is_committed_before_in_sync(
            self, run: Run, log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """One file edited and one moved while stopped: only those are re-read, they are
        committed when `in_sync` is told; then every text comes from the rows."""
        run()
        run.stories.write("1_backlog", "1_story_a", name="a edited")
        run.stories.move("2_story_b", "2_current", "4_merge")
        log_events()
        started = run()
        ((count, committed),) = run.in_sync
        assert count == 3
        assert committed["1_story_a"] == ("1_backlog", "a edited")
        assert committed["2_story_b"] == ("4_merge", "b")
        (line,) = [e for e in log_events() if e["event"] == "daemon.startup"]
        assert line["files_reread"] == 2 and line["ready_before_load"] is False
        content = started.reconciler.content
        assert content.pending() == 0  # the catch-up is committed: no text in memory
        assert content.texts(["1_story_a"])["1_story_a"] == run.stories.path(
            "1_backlog", "1_story_a").read_text(encoding="utf-8")

    def test_a_file_deleted_while_stopped_is_deleted_at_once(self, run: Run) -> None:
        """Absence found at start-up, git not at work: the delete is committed at once."""
        run()
        run.stories.path("4_merge", "3_story_c").unlink()
        started = run()
        assert "3_story_c" not in rows(run.db)
        assert started.deferred == set()

    def test_a_delete_during_a_git_operation_is_handed_to_the_delete_policy(
            self, run: Run) -> None:
        """While `.git/index.lock` exists the file may come back (a checkout midway):
        the row stays and the id is handed on as deferred."""
        run()
        (run.stories.root / ".git").mkdir()
        (run.stories.root / ".git" / "index.lock").touch()
        run.stories.path("4_merge", "3_story_c").unlink()
        started = run()
        assert "3_story_c" in rows(run.db)
        assert started.deferred == {"3_story_c"}


class TestClock:
    def test_durations_come_from_the_injected_clock(
            self, run: Run, log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """stat_ms and ms are read from the clock given, not from the wall: the start,
        the survey's stat pass from 100.1 to 100.35, the end."""
        run()
        log_events()
        run(ScriptedClock(100.0, 100.1, 100.35, 101.5))
        (line,) = [e for e in log_events() if e["event"] == "daemon.startup"]
        assert (line["stat_ms"], line["ms"]) == (250, 1500)


class TestWriterStops:
    def test_an_abandoned_writer_stops_the_catch_up_without_a_failure(self, run: Run) -> None:
        """A second signal abandons the writer: the catch-up raises StartupStopped (the
        next start goes on), nothing is reported as a failure."""
        writer = Writer(lambda: open_writer(run.db), 4, path=run.db, outcome=run.outcome)
        writer.abandon()
        with pytest.raises(StartupStopped):
            run(writer=writer)
        assert run.in_sync == [] and not run.outcome.failed

    def test_a_writer_that_fails_stops_the_start_up_with_its_error(self, run: Run) -> None:
        """A commit error no retry can fix (a constraint, a bug): the writer reports it
        to the run's Outcome, and the start-up raises the same one line."""
        run()  # the schema exists now
        conn = apsw.Connection(str(run.db))
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON pipeline_items "
                     "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END")
        conn.close()
        run.stories.write("1_backlog", "9_story_new", name="new")
        with pytest.raises(CommitFailed, match="refused by a test trigger") as raised:
            run()
        assert run.outcome.error is raised.value
        assert run.in_sync == []
