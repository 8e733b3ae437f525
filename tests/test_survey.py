"""The start's survey (pipelined.survey): the stored signatures against one stat
pass, taken by the daemon's main thread once the watches run; a stat pass racing
a root moved away; the path check before any delete is confirmed.

Real SQLite files built by the real start-up, real folders, the real writer and
apply threads in-process (the daemon's start as a process: test_recovery,
test_paths_under_daemon, test_systemd).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import DEADLINE_S, Stories, wait_until
from test_startup import Run

from pipelined.apply import ApplyLoop
from pipelined.config import Config
from pipelined.layout import ROOT_GONE, stat_signatures
from pipelined.store.connection import open_read_only, open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.writer import Writer
from pipelined.survey import Survey, take_survey
from pipelined.watch import Coalescer

STAGES = ("1_backlog", "2_current", "4_merge")


@pytest.fixture
def run(tmp_path: Path) -> Run:
    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "1_story_a", name="a")
    stories.write("2_current", "2_story_b", name="b")
    return Run(stories, tmp_path / "p.db")


def survey_of(run: Run, config: Config | None = None) -> Survey:
    config = config or run.config
    return take_survey(run.db, run.stories.root, config.stages, config.max_file_bytes)


def names(db: Path) -> dict[str, str]:
    conn = open_read_only(db)
    try:
        return {str(sid): str(name)
                for sid, name in conn.execute("SELECT id, name FROM pipeline_items")}
    finally:
        conn.close()


class TestUnchanged:
    def test_a_database_equal_to_the_folders_is_unchanged(self, run: Run) -> None:
        run()
        survey = survey_of(run)
        assert survey.unchanged
        assert len(survey.seen) == 2

    def test_a_fresh_database_is_not(self, run: Run) -> None:
        """No document yet (no client id): a first import, even of no stories."""
        conn = open_writer(run.db)
        apply_migrations(conn, run.db)
        conn.close()
        shutil.rmtree(run.stories.root)
        for stage in STAGES:
            (run.stories.root / stage).mkdir(parents=True)
        assert not survey_of(run).unchanged

    @pytest.mark.parametrize("change", ["edit", "new", "delete", "move"])
    def test_any_file_changed_while_stopped_is_not(self, run: Run, change: str) -> None:
        run()
        if change == "edit":
            run.stories.write("1_backlog", "1_story_a", name="a, edited")
        elif change == "new":
            run.stories.write("4_merge", "3_story_c", name="c")
        elif change == "delete":
            run.stories.path("2_current", "2_story_b").unlink()
        else:
            run.stories.move("1_story_a", "1_backlog", "4_merge")
        assert not survey_of(run).unchanged

    def test_other_settings_are_not(self, run: Run) -> None:
        """Rows made with another size limit may be stale: not READY before a re-read."""
        run()
        other = run.config._replace(max_file_bytes=run.config.max_file_bytes // 2)
        assert not survey_of(run, other).unchanged

    def test_a_stage_that_could_not_be_listed_is_not(self, run: Run) -> None:
        """Its files cannot be compared (as root, permissions cannot make one: the
        survey's own verdict on the stat pass's report)."""
        run()
        survey = survey_of(run)
        assert survey.unchanged
        blind = survey._replace(unlistable={"2_current": "Permission denied"})
        assert not blind.unchanged


class TestRootGone:
    def test_stages_under_a_vanished_root_are_unlistable_not_empty(self, tmp_path: Path) -> None:
        """A stat pass racing a root moved away must not take its stories for deleted."""
        stories = Stories(tmp_path / "root")
        stories.write("2_current", "1_story_a", name="a")
        stories.root.rename(tmp_path / "elsewhere")
        unlistable: dict[str, str] = {}
        assert stat_signatures(stories.root, STAGES, unlistable) == {}
        assert unlistable == dict.fromkeys(STAGES, ROOT_GONE)

    def test_a_stage_folder_removed_under_a_present_root_is_empty(self, tmp_path: Path) -> None:
        """`rm -r 2_current` deletes its stories: that is no problem to report."""
        stories = Stories(tmp_path / "root")
        stories.write("2_current", "1_story_a", name="a")
        stories.write("1_backlog", "2_story_b", name="b")
        shutil.rmtree(stories.root / "2_current")
        unlistable: dict[str, str] = {}
        assert set(stat_signatures(stories.root, STAGES, unlistable)) == {"1_backlog/2_story_b.md"}
        assert unlistable == {}


class TestAfterTheSurvey:
    def test_the_start_up_goes_by_the_survey_it_is_handed(self, run: Run) -> None:
        """A file edited after the survey is not in the rows at in-sync (the daemon's
        watches, started before the survey, have its event); a stat pass finds it."""
        run()
        survey = survey_of(run)
        assert survey.unchanged
        run.stories.write("1_backlog", "1_story_a", name="after the survey")
        started = run(survey=survey)
        try:
            assert run.in_sync[0][1]["1_story_a"] == ("1_backlog", "a")
            changed, checked = started.reconciler.changed_ids()
            assert (changed, checked) == ({"1_story_a"}, 2)
        finally:
            started.reconciler.content.close()


class GuardedApply:
    """The apply thread in-process, on a real writer and database, with a `paths_ok`
    that tells when it is asked with a delete due."""

    def __init__(self, run: Run) -> None:
        self.allowed = threading.Event()
        self.refused = threading.Event()
        conn = open_writer(run.db)
        apply_migrations(conn, run.db)
        conn.close()
        self.writer = Writer(lambda: open_writer(run.db), 16, path=run.db, outcome=run.outcome)
        self.coalescer = Coalescer(0.02, 1.0)
        config = run.config._replace(delete_grace_ms=0)
        self.apply = ApplyLoop(config, run.stories.root, run.db, self.coalescer, self.writer,
                               outcome=run.outcome, paths_ok=self._paths_ok)

    def _paths_ok(self) -> bool:
        if self.allowed.is_set():
            return True
        self.refused.set()
        return False

    def __enter__(self) -> GuardedApply:
        self.writer.start()
        self.apply.start()
        wait_until(self.apply.loaded.done, what="the start-up")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.coalescer.stop()
        self.apply.join(DEADLINE_S)
        self.writer.close(DEADLINE_S)


class TestRootCheckBeforeDeletes:
    def test_the_start_up_deletes_nothing_while_the_paths_are_not_its_own(
            self, run: Run) -> None:
        """A root replaced between the survey and the catch-up looks like every story
        deleted while stopped: the catch-up hands the absent ones to the delete policy
        (the daemon stops on the path guard first) instead of deleting them."""
        run()
        run.stories.path("2_current", "2_story_b").unlink()
        started = run(paths_ok=lambda: False)
        try:
            assert started.deferred == {"2_story_b"}
            assert names(run.db) == {"1_story_a": "a", "2_story_b": "b"}
        finally:
            started.reconciler.content.close()

    def test_no_delete_is_confirmed_while_the_paths_are_not_the_daemons(self, run: Run) -> None:
        """A root moved away and replaced (its stage folders empty) looks like every story
        deleted: the apply thread confirms no delete until the paths are its own again."""
        with GuardedApply(run) as guarded:
            run.stories.path("2_current", "2_story_b").unlink()
            guarded.coalescer.touch({"2_story_b"})
            wait_until(guarded.refused.is_set, what="a due delete held back")
            assert "2_story_b" in names(run.db)
            guarded.allowed.set()  # the next poll of the deferred deletes confirms it
            wait_until(lambda: "2_story_b" not in names(run.db), what="the delete")
        assert names(run.db) == {"1_story_a": "a"}


class TestImports:
    def test_ready_needs_neither_the_sync_nor_the_writer(self) -> None:
        """What runs before an unchanged restart's READY (the daemon module, the watches,
        the survey) imports neither pycrdt, the parser nor structlog."""
        probe = ("import json, sys\n"
                 "import pipelined.commands.rundaemon, pipelined.daemon, pipelined.survey\n"
                 "import pipelined.watch\n"
                 "print(json.dumps(sorted(sys.modules)))\n")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              timeout=DEADLINE_S, check=True)
        loaded = set(json.loads(done.stdout))
        assert {"apsw", "watchdog"} <= loaded  # the probe did import the survey and watches
        tops = {name.split(".")[0] for name in loaded}
        assert tops & {"pycrdt", "frontmatter", "yaml", "structlog"} == set()
        assert loaded & {"pipelined.sync", "pipelined.state", "pipelined.startup",
                         "pipelined.apply", "pipelined.store.writer"} == set()
