"""Restarts load from the database and catch every change made while stopped."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, wait_until
from watchdog.events import FileOpenedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class OpenRecorder(FileSystemEventHandler):
    """Records every open of a .md file (inotify IN_OPEN), from outside the daemon."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.lock = threading.Lock()

    def on_opened(self, event: FileSystemEvent) -> None:
        path = os.fsdecode(event.src_path)
        if path.endswith(".md"):
            with self.lock:
                self.opened.append(path)


class TestRestart:
    def test_offline_changes_of_every_kind(self, stories: Stories,
                                           daemon: DaemonProcess) -> None:
        """Edits, moves, creates and deletes made while stopped are all caught."""
        for n in range(12):
            stories.write(STAGES[n % 3], f"{n + 1}_story_s", name=f"s{n}", retry_count=1)
        daemon.start()
        created = {i: r["created_at"] for i, r in daemon.rows().items()}
        assert daemon.stop() == 0

        stories.write("1_backlog", "1_story_s", name="edited offline", retry_count=1)
        stories.move("2_story_s", "2_current", "4_merge")
        stories.move("3_story_s", "4_merge", "1_backlog")
        stories.path("4_merge", "6_story_s").unlink()
        stories.write("2_current", "50_story_new", name="new offline")
        # an edit that keeps the size but changes the content
        path = stories.path("2_current", "5_story_s")
        path.write_text(path.read_text().replace("s4", "S4"))

        daemon.start()
        assert folder_matches_db(stories, daemon)
        rows = daemon.rows()
        assert rows["1_story_s"]["name"] == "edited offline"
        assert rows["2_story_s"]["stage"] == "4_merge" and rows["2_story_s"]["retry_count"] == 0
        assert rows["3_story_s"]["stage"] == "1_backlog"
        assert "6_story_s" not in rows
        assert rows["50_story_new"]["name"] == "new offline"
        assert rows["5_story_s"]["name"] == "S4"
        for story_id in ("1_story_s", "2_story_s", "3_story_s", "5_story_s"):
            assert rows[story_id]["created_at"] == created[story_id]

    def test_unchanged_restart_opens_no_story_file(self, stories: Stories,
                                                   daemon: DaemonProcess) -> None:
        """With nothing changed, a restart opens no story file (seen via inotify)."""
        for n in range(30):
            stories.write(STAGES[n % 3], f"{n + 1}_story_s")
        daemon.start()
        assert daemon.stop() == 0
        recorder = OpenRecorder()
        observer = Observer()
        for stage in STAGES:
            observer.schedule(recorder, str(stories.root / stage), event_filter=[FileOpenedEvent])
        observer.start()
        try:
            # Prove the recorder works before relying on it seeing nothing.
            stories.path("1_backlog", "1_story_s").read_text()
            wait_until(lambda: recorder.opened, timeout=10,
                       what="the inotify recorder to see an open at all")
            with recorder.lock:
                recorder.opened.clear()
            daemon.start()
            startup = daemon.wait_log("daemon.startup", count=2)
            assert daemon.stop() == 0
            # A probe open after the daemon stopped: once it is seen, any earlier open is too.
            stories.path("2_current", "2_story_s").read_text()
            wait_until(lambda: any("2_story_s" in p for p in recorder.opened), timeout=10,
                       what="the probe open")
        finally:
            observer.stop()
            observer.join()
        assert [p for p in recorder.opened if "2_story_s" not in p] == []
        assert startup["files_reread"] == 0
        assert startup["files_stat_checked"] == 30
        assert startup["ready_before_load"] is True

    def test_signature_collision_is_not_reread(self, stories: Stories,
                                               daemon: DaemonProcess) -> None:
        """A same-size rewrite with the old mtime restored is (by design) not re-read."""
        path = stories.write("1_backlog", "7_story_same", name="aaaa")
        daemon.start()
        assert daemon.stop() == 0
        st = path.stat()
        path.write_text(path.read_text().replace("aaaa", "bbbb"))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        daemon.start()
        assert daemon.row("7_story_same")["name"] == "aaaa"  # type: ignore[index]

    def test_edit_after_a_changed_restart_diffs_against_the_stored_text(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """A restart that catches up on one offline change reads the other stories'
        contents only after READY; a live edit of one of those must still change only
        the edited field: a move's retry_count reset (0 in the state, 2 in the file)
        is not undone by a name edit."""
        stories.write("2_current", "1_story_moved", name="moved", retry_count=2)
        stories.write("1_backlog", "2_story_other", name="other")
        daemon.start()
        stories.move("1_story_moved", "2_current", "4_merge")
        daemon.wait_row("1_story_moved", lambda r: r["stage"] == "4_merge")
        assert daemon.row("1_story_moved")["retry_count"] == 0  # type: ignore[index]
        assert daemon.stop() == 0

        stories.write("1_backlog", "2_story_other", name="other, edited offline")
        daemon.start()
        startup = daemon.wait_log("daemon.startup", count=2)
        assert (startup["files_reread"], startup["ready_before_load"]) == (1, False)
        stories.write("4_merge", "1_story_moved", name="renamed live", retry_count=2)
        row = daemon.wait_row("1_story_moved", lambda r: r["name"] == "renamed live")
        assert row["retry_count"] == 0
        assert daemon.row("2_story_other")["name"] == "other, edited offline"  # type: ignore[index]
        assert folder_matches_db(stories, daemon)
        assert daemon.stop() == 0


def test_db_lives_in_the_state_directory_by_default(stories: Stories, tmp_path: Path) -> None:
    """Without --db the database is named after the root in $STATE_DIRECTORY."""
    from pipelined.config import default_db_path

    env = {"STATE_DIRECTORY": str(tmp_path / "state-dir")}
    expected = default_db_path(stories.root, env)
    assert expected.parent == tmp_path / "state-dir"
    assert expected.name.startswith("root-")
