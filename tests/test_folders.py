"""Stage folders and files that come and go as whole folders, or cross the root's edge.

A stage folder can be deleted, recreated, moved out of the root or replaced by
a folder moved in from elsewhere; a story file can be moved out of the tree or
in from outside. The stories follow, a new stage folder is watched, and a
folder moved out is no longer part of the pipeline even though inotify keeps
reporting writes inside it under the old paths.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from conftest import DaemonProcess, Stories, folder_matches_db, observe, story_text, wait_until


def populate(stories: Stories) -> None:
    """Five stories in each stage."""
    for stage, base in (("1_backlog", 100), ("2_current", 200), ("4_merge", 400)):
        for k in range(5):
            stories.write(stage, f"{base + k}_story_{stage[2:]}", name=f"{stage} {k}")


def untouched(before: dict[str, dict[str, object]], daemon: DaemonProcess,
              stages: tuple[str, ...]) -> bool:
    """The rows of the stories in `stages` are exactly as they were."""
    rows = daemon.rows()
    return all(rows.get(i) == r for i, r in before.items() if r["stage"] in stages)


class TestStageFolderDeletedAndRecreated:
    def test_deleted_stage_folder_takes_its_stories(self, stories: Stories,
                                                    daemon: DaemonProcess) -> None:
        """`rm -r 2_current`: its five stories go; the other stages are unaffected."""
        populate(stories)
        daemon.start()
        before = daemon.rows()
        shutil.rmtree(stories.root / "2_current")
        wait_until(lambda: not any(r["stage"] == "2_current" for r in daemon.rows().values()),
                   what="the 2_current stories to go")
        assert untouched(before, daemon, ("1_backlog", "4_merge"))
        assert len(daemon.rows()) == 10
        deleted = {e["id"] for e in daemon.log_events() if e.get("event") == "story.deleted"}
        assert deleted == {f"{200 + k}_story_current" for k in range(5)}
        stories.write("1_backlog", "150_story_after", name="after")
        daemon.wait_row("150_story_after")
        assert daemon.proc is not None and daemon.proc.poll() is None

    def test_recreated_stage_folder_is_watched_again(self, stories: Stories,
                                                     daemon: DaemonProcess) -> None:
        """A deleted stage folder recreated with files: its stories come back, and a
        later create and edit inside the new folder are seen."""
        populate(stories)
        daemon.start()
        folder = stories.root / "2_current"
        shutil.rmtree(folder)
        wait_until(lambda: len(daemon.rows()) == 10, what="the 2_current stories to go")

        folder.mkdir()  # files written at once, racing the new watch
        for k in range(5):
            stories.write("2_current", f"{200 + k}_story_current", name=f"back {k}")
        wait_until(lambda: folder_matches_db(stories, daemon), what="stories back")
        assert daemon.row("200_story_current")["name"] == "back 0"  # type: ignore[index]

        stories.write("2_current", "201_story_current", name="edited in the new folder")
        daemon.wait_row("201_story_current", lambda r: r["name"] == "edited in the new folder")
        stories.write("2_current", "260_story_fresh", name="fresh")
        daemon.wait_row("260_story_fresh", lambda r: r["stage"] == "2_current")
        stories.path("2_current", "202_story_current").unlink()
        daemon.wait_gone("202_story_current")
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")

    def test_recreated_at_once_is_watched(self, stories: Stories,
                                          daemon: DaemonProcess) -> None:
        """`rm -r 2_current && mkdir 2_current` in one go (ext4 often hands the new folder
        the old inode number): the old stories go, and files written in the new folder
        later, after everything settled, are still seen."""
        populate(stories)
        daemon.start()
        folder = stories.root / "2_current"
        shutil.rmtree(folder)
        folder.mkdir()
        wait_until(lambda: folder_matches_db(stories, daemon), what="the old stories to go")
        stories.write("1_backlog", "160_story_marker")
        daemon.wait_row("160_story_marker")
        stories.write("2_current", "261_story_later", name="written later")
        daemon.wait_row("261_story_later", timeout=5)

    def test_deleted_and_recreated_several_times_in_a_row(
        self, stories: Stories, daemon: DaemonProcess
    ) -> None:
        """Deleted and recreated several times in a row: the last version wins, and the
        watch follows the newest folder."""
        populate(stories)
        daemon.start()
        folder = stories.root / "4_merge"
        for round_ in range(3):
            shutil.rmtree(folder)
            folder.mkdir()
            stories.write("4_merge", f"{500 + round_}_story_round", name=f"round {round_}")
        wait_until(lambda: folder_matches_db(stories, daemon), what="only the last round left")
        assert {i for i, r in daemon.rows().items() if r["stage"] == "4_merge"} == {
            "502_story_round"}
        stories.write("4_merge", "502_story_round", name="edited")
        daemon.wait_row("502_story_round", lambda r: r["name"] == "edited")


class TestStageFolderMovedOut:
    def test_moved_out_folder_leaves_and_stays_out(self, stories: Stories,
                                                   daemon: DaemonProcess,
                                                   tmp_path: Path) -> None:
        """`mv 2_current /elsewhere`: its stories go, and later writes inside the moved-out
        folder (still reported by inotify under the old paths) never come back."""
        populate(stories)
        daemon.start()
        before = daemon.rows()
        away = tmp_path / "away_current"
        os.rename(stories.root / "2_current", away)
        wait_until(lambda: len(daemon.rows()) == 10, what="the 2_current stories to go")
        assert untouched(before, daemon, ("1_backlog", "4_merge"))

        (away / "200_story_current.md").write_text(story_text(name="edited outside"))
        (away / "270_story_outside.md").write_text(story_text(name="created outside"))
        (away / "201_story_current.md").unlink()
        os.rename(away / "202_story_current.md", away / "271_story_renamed.md")
        stories.write("1_backlog", "170_story_marker", name="after the outside writes")
        daemon.wait_row("170_story_marker")
        outside_ids = {"200_story_current", "270_story_outside", "271_story_renamed",
                       "203_story_current", "204_story_current"}
        assert observe(lambda: not outside_ids & set(daemon.rows()), seconds=1.0), \
            "a story from the moved-out folder came back"
        assert "2_current" not in {r["stage"] for r in daemon.rows().values()}
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")

    def test_moved_out_folder_moved_back_in(self, stories: Stories, daemon: DaemonProcess,
                                            tmp_path: Path) -> None:
        """A stage folder moved out, edited outside, then moved back: the stories return
        with the text they have now, and edits inside are seen again."""
        populate(stories)
        daemon.start()
        away = tmp_path / "away_merge"
        os.rename(stories.root / "4_merge", away)
        wait_until(lambda: len(daemon.rows()) == 10, what="the 4_merge stories to go")
        (away / "400_story_merge.md").write_text(story_text(name="edited while away"))
        os.rename(away, stories.root / "4_merge")
        wait_until(lambda: folder_matches_db(stories, daemon), what="stories back")
        assert daemon.row("400_story_merge")["name"] == "edited while away"  # type: ignore[index]
        stories.write("4_merge", "401_story_merge", name="edited after the return")
        daemon.wait_row("401_story_merge", lambda r: r["name"] == "edited after the return")


class TestStageFolderReplaced:
    def test_folder_moved_in_replaces_a_stage(self, stories: Stories, daemon: DaemonProcess,
                                              tmp_path: Path) -> None:
        """The stage folder is moved away and a prepared folder moved in at its place.

        Ids in both keep their row (an edit: created_at kept), ids only in the
        old folder go, ids only in the new folder appear; later edits inside
        the new folder are seen, later writes inside the old one are not.
        """
        populate(stories)
        daemon.start()
        before = daemon.rows()
        incoming = tmp_path / "incoming"
        incoming.mkdir()
        for k in range(3):  # 200..202 exist in 2_current too
            (incoming / f"{200 + k}_story_current.md").write_text(
                story_text(name=f"replaced {k}"))
        for k in range(4):
            (incoming / f"{280 + k}_story_incoming.md").write_text(story_text(name=f"in {k}"))
        (incoming / "notes.txt").write_text("not a story")
        old = tmp_path / "old_current"
        os.rename(stories.root / "2_current", old)
        os.rename(incoming, stories.root / "2_current")

        wait_until(lambda: folder_matches_db(stories, daemon), what="the new folder's stories")
        rows = daemon.rows()
        assert {i for i, r in rows.items() if r["stage"] == "2_current"} == {
            *(f"{200 + k}_story_current" for k in range(3)),
            *(f"{280 + k}_story_incoming" for k in range(4))}
        for k in range(3):
            story_id = f"{200 + k}_story_current"
            assert rows[story_id]["name"] == f"replaced {k}"
            assert rows[story_id]["created_at"] == before[story_id]["created_at"]
        assert untouched(before, daemon, ("1_backlog", "4_merge"))

        stories.write("2_current", "281_story_incoming", name="edited in the moved-in folder")
        daemon.wait_row("281_story_incoming",
                        lambda r: r["name"] == "edited in the moved-in folder")
        stories.write("2_current", "290_story_new_here", name="new")
        daemon.wait_row("290_story_new_here")

        (old / "203_story_current.md").write_text(story_text(name="written in the old folder"))
        (old / "200_story_current.md").write_text(story_text(name="old copy edited"))
        stories.write("1_backlog", "171_story_marker")
        daemon.wait_row("171_story_marker")
        assert observe(lambda: "203_story_current" not in daemon.rows()
                       and daemon.row("200_story_current")["name"] == "replaced 0",  # type: ignore[index]
                       seconds=1.0), "a write in the replaced folder reached the database"
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")


    def test_stage_folder_renamed_onto_another_stage(self, stories: Stories,
                                                     daemon: DaemonProcess) -> None:
        """`mv 2_current 4_merge` over an empty 4_merge: every story moved stage (created_at
        kept, retry_count reset, nothing deleted), and the folder is watched as 4_merge."""
        for k in range(5):
            stories.write("2_current", f"{200 + k}_story_current", name=f"c {k}", retry_count=2)
        stories.write("1_backlog", "100_story_backlog")
        daemon.start()
        before = daemon.rows()
        os.rename(stories.root / "2_current", stories.root / "4_merge")  # 4_merge is empty
        (stories.root / "2_current").mkdir()
        wait_until(lambda: folder_matches_db(stories, daemon), what="the stories in 4_merge")
        rows = daemon.rows()
        for k in range(5):
            row = rows[f"{200 + k}_story_current"]
            assert (row["stage"], row["retry_count"]) == ("4_merge", 0)
            assert row["created_at"] == before[f"{200 + k}_story_current"]["created_at"]
        assert not [e for e in daemon.log_events() if e.get("event") == "story.deleted"]
        stories.write("4_merge", "203_story_current", name="edited after the rename")
        daemon.wait_row("203_story_current", lambda r: r["name"] == "edited after the rename")
        stories.write("2_current", "250_story_new", name="in the new 2_current")
        daemon.wait_row("250_story_new", lambda r: r["stage"] == "2_current")


class TestFilesAcrossTheRoot:
    def test_file_moved_out_of_the_tree_is_a_delete(self, stories: Stories,
                                                    daemon: DaemonProcess,
                                                    tmp_path: Path) -> None:
        """`mv 1_backlog/x.md /elsewhere/`: the story is deleted (a real DELETE)."""
        populate(stories)
        daemon.start()
        before = daemon.rows()
        os.rename(stories.path("1_backlog", "101_story_backlog"), tmp_path / "moved_out.md")
        daemon.wait_gone("101_story_backlog")
        assert not daemon.query("SELECT 1 FROM file_signatures WHERE story_id = ?",
                                ("101_story_backlog",))
        deleted = [e for e in daemon.log_events() if e.get("event") == "story.deleted"]
        assert [e["id"] for e in deleted] == ["101_story_backlog"]
        rows = daemon.rows()
        assert all(rows[i] == r for i, r in before.items() if i != "101_story_backlog")
        (tmp_path / "moved_out.md").write_text(story_text(name="edited outside"))
        stories.write("4_merge", "172_story_marker")
        daemon.wait_row("172_story_marker")
        assert observe(lambda: daemon.row("101_story_backlog") is None, seconds=0.5)

    def test_file_moved_into_the_tree_is_a_create(self, stories: Stories,
                                                  daemon: DaemonProcess,
                                                  tmp_path: Path) -> None:
        """`mv /elsewhere/x.md 2_current/`: a new story with the file's text."""
        populate(stories)
        daemon.start()
        outside = tmp_path / "outside"
        outside.mkdir()
        text = story_text(name="came from outside", agent="mover")
        (outside / "300_story_arrival.md").write_text(text)
        os.rename(outside / "300_story_arrival.md", stories.path("2_current", "300_story_arrival"))
        row = daemon.wait_row("300_story_arrival")
        assert (row["stage"], row["name"], row["agent"], row["content"]) == (
            "2_current", "came from outside", "mover", text)
        created = [e["id"] for e in daemon.log_events() if e.get("event") == "story.created"]
        assert created.count("300_story_arrival") == 1
        stories.write("2_current", "300_story_arrival", name="edited in place")
        daemon.wait_row("300_story_arrival", lambda r: r["name"] == "edited in place")
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")

    def test_file_moved_out_and_back_quickly_keeps_its_row(
        self, stories: Stories, daemon: DaemonProcess, tmp_path: Path
    ) -> None:
        """Out of the tree and back into another stage before the delete is confirmed:
        a move, created_at kept, never logged as deleted."""
        populate(stories)
        daemon.start()
        before = daemon.row("102_story_backlog")
        assert before is not None
        parked = tmp_path / "parked.md"
        os.rename(stories.path("1_backlog", "102_story_backlog"), parked)
        os.rename(parked, stories.path("4_merge", "102_story_backlog"))
        row = daemon.wait_row("102_story_backlog", lambda r: r["stage"] == "4_merge")
        assert row["created_at"] == before["created_at"]
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")
        assert not [e for e in daemon.log_events() if e.get("event") == "story.deleted"]
