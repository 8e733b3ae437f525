"""The running daemon follows creates, edits, moves and deletes made on disk."""

from __future__ import annotations

import itertools
import json
import os
import threading

import pytest
from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, story_text, wait_until


class TestCreateEditDelete:
    def test_create_is_a_typed_row(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A new file becomes a row whose fields are typed from the front matter."""
        daemon.start()
        stories.write("1_backlog", "10_story_login", name="Log in", agent="coder-1",
                      retry_count=2, blocked=True, depends_on=[3, 4], priority="high")
        row = daemon.wait_row("10_story_login")
        assert row["stage"] == "1_backlog"
        assert row["name"] == "Log in"
        assert row["agent"] == "coder-1"
        assert row["retry_count"] == 2
        assert row["blocked"] == 1
        assert json.loads(row["depends_on"]) == [3, 4]
        assert row["content"] == stories.path("1_backlog", "10_story_login").read_text()
        assert row["created_at"].endswith("Z") and row["created_at"] == row["updated_at"]
        extra = daemon.query("SELECT extra FROM story_extras WHERE id='10_story_login'")
        assert json.loads(extra[0][0]) == {"priority": "high"}

    def test_edit_changes_fields_and_keeps_created_at(
        self, stories: Stories, daemon: DaemonProcess
    ) -> None:
        """An edit updates the changed field and the content; created_at stays."""
        stories.write("2_current", "11_story_x", name="Before", agent="a")
        daemon.start()
        before = daemon.wait_row("11_story_x")
        stories.write("2_current", "11_story_x", name="After", agent="a", body="New body\n")
        after = daemon.wait_row("11_story_x", lambda r: r["name"] == "After")
        assert after["content"].endswith("New body\n")
        assert after["created_at"] == before["created_at"]
        assert after["updated_at"] >= before["updated_at"]
        events = [e for e in daemon.log_events() if e.get("event") == "story.updated"]
        assert events and events[-1]["fields"] == ["name"]

    def test_edit_writes_only_changed_fields(self, stories: Stories,
                                             daemon: DaemonProcess) -> None:
        """After a move reset retry_count, editing another field leaves it at 0."""
        stories.write("1_backlog", "12_story_y", name="Y", retry_count=3)
        daemon.start()
        stories.move("12_story_y", "1_backlog", "2_current")
        daemon.wait_row("12_story_y", lambda r: r["stage"] == "2_current")
        stories.write("2_current", "12_story_y", name="Y2", retry_count=3)
        row = daemon.wait_row("12_story_y", lambda r: r["name"] == "Y2")
        assert row["retry_count"] == 0  # the file's retry_count did not change

    def test_delete_removes_the_row(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A deleted file's row is really DELETEd, and stays gone after a restart."""
        stories.write("1_backlog", "13_story_gone")
        stories.write("1_backlog", "14_story_stays")
        daemon.start()
        daemon.wait_row("13_story_gone")
        stories.path("1_backlog", "13_story_gone").unlink()
        daemon.wait_gone("13_story_gone")
        assert daemon.query("SELECT count(*) FROM file_signatures WHERE story_id='13_story_gone'"
                            ) == [(0,)]
        assert daemon.stop() == 0
        daemon.start()
        assert daemon.row("13_story_gone") is None
        assert daemon.row("14_story_stays") is not None

    def test_non_story_files_are_ignored(self, stories: Stories, daemon: DaemonProcess) -> None:
        """Leftovers, hidden files, other extensions and sub-folders never become stories."""
        daemon.start()
        for name in (".15_x.md.swp", "15_x.md~", "4913", "#15_x.md#", ".#15_x.md", "notes.md",
                     "15_x.txt", "15_x.md.tmp", "15_x.md___jb_tmp___", ".hidden.md"):
            (stories.root / "1_backlog" / name).write_text("---\nname: no\n---\n")
        (stories.root / "1_backlog" / "sub").mkdir()
        (stories.root / "1_backlog" / "sub" / "16_nested.md").write_text("---\nname: no\n---\n")
        (stories.root / "3_qa").mkdir()
        (stories.root / "3_qa" / "17_unwatched.md").write_text("---\nname: no\n---\n")
        stories.write("1_backlog", "18_marker")
        daemon.wait_row("18_marker")
        assert set(daemon.rows()) == {"18_marker"}


class TestMoves:
    @pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(STAGES, 2)))
    def test_move_between_stages(self, stories: Stories, daemon: DaemonProcess,
                                 src: str, dst: str) -> None:
        """A move changes the stage, resets retry_count and keeps created_at."""
        stories.write(src, "20_story_move", name="Mover", retry_count=4)
        daemon.start()
        before = daemon.wait_row("20_story_move")
        assert before["retry_count"] == 4
        stories.move("20_story_move", src, dst)
        after = daemon.wait_row("20_story_move", lambda r: r["stage"] == dst)
        assert after["retry_count"] == 0
        assert after["created_at"] == before["created_at"]
        assert after["name"] == "Mover"
        moved = [e for e in daemon.log_events() if e.get("event") == "story.moved"]
        assert moved[-1]["from_stage"] == src and moved[-1]["to_stage"] == dst

    def test_delete_then_create_elsewhere_is_a_move(self, stories: Stories,
                                                    daemon: DaemonProcess) -> None:
        """A delete followed by a create of the same id (as git does) is a move."""
        text = story_text(name="Git style")
        stories.write("1_backlog", "21_story_git", text)
        daemon.start()
        before = daemon.wait_row("21_story_git")
        stories.path("1_backlog", "21_story_git").unlink()
        stories.write("4_merge", "21_story_git", text)
        after = daemon.wait_row("21_story_git", lambda r: r["stage"] == "4_merge")
        assert after["created_at"] == before["created_at"]
        assert not [e for e in daemon.log_events() if e.get("event") == "story.deleted"]

    def test_many_changes_end_equal_to_the_folders(self, stories: Stories,
                                                   daemon: DaemonProcess) -> None:
        """A burst of creates, edits, moves and deletes ends with rows equal to files."""
        for n in range(60):
            stories.write(STAGES[n % 3], f"{100 + n}_story_bulk", name=f"bulk {n}")
        daemon.start()
        for n in range(60):
            story_id = f"{100 + n}_story_bulk"
            stage = STAGES[n % 3]
            if n % 4 == 0:
                stories.path(stage, story_id).unlink()
            elif n % 4 == 1:
                stories.move(story_id, stage, STAGES[(n + 1) % 3])
            elif n % 4 == 2:
                stories.write(stage, story_id, name=f"edited {n}")
        for n in range(10):
            stories.write("2_current", f"{200 + n}_story_new")
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")


class TestConflicts:
    def test_same_id_in_two_stages(self, stories: Stories, daemon: DaemonProcess) -> None:
        """The newest file wins; doctor reports the conflict; it resolves when one goes."""
        older = stories.write("1_backlog", "30_story_twice", name="old copy")
        os.utime(older, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        stories.write("2_current", "30_story_twice", name="new copy")
        daemon.start()
        row = daemon.wait_row("30_story_twice")
        assert (row["stage"], row["name"]) == ("2_current", "new copy")
        doctor = daemon.cli("doctor", "--json")
        assert doctor.returncode == 1
        report = json.loads(doctor.stdout)
        assert report["conflicts"] == [{"id": "30_story_twice",
                                        "winner": "2_current/30_story_twice.md",
                                        "others": ["1_backlog/30_story_twice.md"]}]
        stories.path("2_current", "30_story_twice").unlink()
        daemon.wait_row("30_story_twice", lambda r: r["stage"] == "1_backlog")
        wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")


class TestBusyTree:
    @pytest.mark.slow  # over about 6 s of wall time: the slow pass
    def test_delete_goes_through_while_another_file_keeps_changing(
        self, stories: Stories, daemon: DaemonProcess
    ) -> None:
        """A log file written every 50 ms in a stage folder does not hold a delete forever."""
        stories.write("1_backlog", "50_story_a")
        stories.write("1_backlog", "51_story_b")
        daemon.start()
        stop = threading.Event()

        def keep_writing() -> None:
            with open(stories.root / "2_current" / "agent.log", "a") as log:
                while not stop.wait(0.05):
                    log.write("tick\n")
                    log.flush()

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            stories.path("1_backlog", "50_story_a").unlink()
            daemon.wait_gone("50_story_a", timeout=20)
        finally:
            stop.set()
            writer.join()
        assert daemon.row("51_story_b") is not None
