"""What the daemon was started on changes under it: the database file, its lock
file, the root, a stage folder's permissions, the inotify watch limit.

Each is the real daemon as a subprocess on real files; a stop it decides on
itself must be one `Error:` line and a non-zero exit (systemd's
Restart=on-failure then starts it again), never a traceback or exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DEADLINE_S,
    DaemonProcess,
    Stories,
    modes_bind_prefix,
    needs_modes,
    story_text,
    userns_inotify_limits,
    wait_until,
)

from pipelined.store.heartbeat import read_heartbeat

needs_permissions = needs_modes


def exits_with_one_error_line(daemon: DaemonProcess, expected: str) -> str:
    """Wait for the daemon to stop by itself; its last line is the one `Error:` line."""
    assert daemon.proc is not None
    code = daemon.proc.wait(DEADLINE_S)
    tail = daemon.log_tail(400)
    assert code == 1, tail
    errors = [line for line in tail.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], tail
    assert "Traceback" not in tail
    return errors[0]


def status(daemon: DaemonProcess) -> dict[str, Any]:
    done = daemon.cli("status", "--json", check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


class TestDatabaseReplaced:
    def test_database_deleted_under_the_daemon_stops_it(self, stories: Stories,
                                                        daemon: DaemonProcess) -> None:
        """A database file unlinked under a running daemon stops it (exit 1, one line),
        instead of committing into a file nobody will open again and saying 'in sync'."""
        daemon.start()
        os.unlink(daemon.db)
        line = exits_with_one_error_line(daemon, "the database file was deleted while the "
                                                 "daemon ran")
        assert str(daemon.db) in line

    def test_database_replaced_under_the_daemon_stops_it(self, stories: Stories,
                                                         daemon: DaemonProcess,
                                                         tmp_path: Path) -> None:
        """A copy renamed over the database (a restore by hand) stops the daemon too,
        and a restart then brings the file at that path up to date with the folders."""
        stories.write("1_backlog", "1_story_kept", name="kept")
        daemon.start()
        daemon.wait_row("1_story_kept")
        copy = tmp_path / "copy.db"
        shutil.copy(daemon.db, copy)
        os.rename(copy, daemon.db)
        exits_with_one_error_line(daemon, "the database file was replaced by another file")
        stories.write("1_backlog", "2_story_after", name="after")
        daemon.start()
        daemon.wait_row("2_story_after")
        assert daemon.stop() == 0

    def test_wal_deleted_stops_the_daemon_and_loses_nothing(self, stories: Stories,
                                                            daemon: DaemonProcess) -> None:
        """The -wal file deleted under the daemon (committed frames would go with it):
        the daemon stops with one line, its last checkpoint saves what the log held,
        and a restart shows every story, the newest included."""
        daemon.start()
        stories.write("1_backlog", "5_story_in_the_wal", name="in the log only")
        daemon.wait_row("5_story_in_the_wal")
        # The guard takes the -wal once the writer holds it, at a health tick: let
        # two heartbeats (one per tick) pass after the commit.
        for _tick in range(2):
            since = time.time()
            wait_until(lambda t=since: (read_heartbeat(daemon.db) or {}).get(
                "heartbeat_unix", 0) > t, what="a health tick")
        os.unlink(daemon.db.with_name(daemon.db.name + "-wal"))
        exits_with_one_error_line(daemon, "write-ahead log")
        daemon.start()
        daemon.wait_row("5_story_in_the_wal", lambda r: r["name"] == "in the log only")
        assert daemon.stop() == 0

    def test_lock_file_deleted_stops_the_daemon(self, daemon: DaemonProcess) -> None:
        """Deleting `<db>.lock` would let a second daemon start on the same database:
        the first one stops with one line."""
        daemon.start()
        os.unlink(daemon.db.with_name(daemon.db.name + ".lock"))
        exits_with_one_error_line(daemon, "lock file")


class TestRootDeleted:
    def test_root_deleted_is_one_line_and_exit_1(self, stories: Stories,
                                                 daemon: DaemonProcess) -> None:
        """The root folder removed under the daemon: exit 1 and one line naming the
        root, no traceback anywhere in its output."""
        stories.write("2_current", "3_story_doomed", name="doomed")
        daemon.start()
        shutil.rmtree(stories.root)
        line = exits_with_one_error_line(daemon, "the root folder was deleted")
        assert str(stories.root) in line

    def test_root_moved_away_is_one_line_and_exit_1(self, stories: Stories,
                                                    daemon: DaemonProcess,
                                                    tmp_path: Path) -> None:
        """The root renamed away (the watches would follow the folder, the paths not):
        the daemon stops with one line, and the rows of its stories are not deleted."""
        stories.write("2_current", "4_story_moved", name="moved with the root")
        daemon.start()
        daemon.wait_row("4_story_moved")
        os.rename(stories.root, tmp_path / "elsewhere")
        exits_with_one_error_line(daemon, "the root folder was deleted")
        assert daemon.row("4_story_moved") is not None


def test_a_stage_folder_symlinked_inside_the_root_is_watched(
        stories: Stories, daemon: DaemonProcess) -> None:
    """`2_current -> folders/current`, inside the root (a start accepts it): a file
    written there lands within seconds (it waited for the 300 s safety-net rescan:
    the watch did not follow the symlink)."""
    folder, real = stories.root / "2_current", stories.root / "folders" / "current"
    real.parent.mkdir()
    folder.rename(real)
    folder.symlink_to(Path("folders") / "current")
    daemon.start()
    stories.write("2_current", "24_story_linked", name="through the link")
    assert daemon.wait_row("24_story_linked", timeout=10)["stage"] == "2_current"
    stories.write("2_current", "24_story_linked", name="edited")
    daemon.wait_row("24_story_linked", lambda r: r["name"] == "edited", timeout=10)
    assert daemon.stop() == 0


def test_a_stage_folder_swapped_for_a_symlink_out_of_the_root(
        stories: Stories, daemon: DaemonProcess, tmp_path: Path) -> None:
    """`mv 2_current ../elsewhere && ln -s ../elsewhere 2_current` under a running
    daemon (a start refuses such a folder): its stories cannot be read, so the folder
    is unreadable, not a list of them. A file deleted or created through the link
    changes nothing (before, the delete landed and the new file did not), status
    says degraded and names the folder; once the folder is back, both land."""
    stories.write("2_current", "20_story_kept", name="kept")
    stories.write("2_current", "21_story_other", name="other")
    daemon.start()
    daemon.wait_row("21_story_other")
    folder, elsewhere = stories.root / "2_current", tmp_path / "elsewhere"
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere)
    (elsewhere / "20_story_kept.md").unlink()
    (elsewhere / "22_story_new.md").write_text(story_text(name="new"))
    info = wait_until(lambda: (s := status(daemon))["state"] == "degraded" and s,
                      timeout=10, what="status degraded")
    assert any(p.startswith("2_current: ") and "symlink out of the root" in p
               for p in info["folder_problems"]), info["folder_problems"]
    stories.write("1_backlog", "23_story_elsewhere", name="the other folders go on")
    daemon.wait_row("23_story_elsewhere", timeout=10)
    assert daemon.row("20_story_kept") is not None  # not taken for deleted
    assert daemon.row("22_story_new") is None
    folder.unlink()
    elsewhere.rename(folder)
    daemon.wait_gone("20_story_kept", timeout=10)
    daemon.wait_row("22_story_new", timeout=10)
    wait_until(lambda: status(daemon)["state"] == "ready", timeout=10, what="ready again")
    assert daemon.stop() == 0


@needs_permissions
class TestUnreadableStageFolder:
    def test_other_folders_go_on_and_the_folder_catches_up(self, stories: Stories,
                                                           daemon: DaemonProcess) -> None:
        """`chmod 000 2_current` under a running daemon: creates and edits in the other
        folders still land, status says degraded and names the folder; once it is
        readable again, what changed in it meanwhile lands within seconds, not at the
        next safety-net rescan, and status is ready again."""
        daemon.prefix = list(modes_bind_prefix() or ())
        stories.write("2_current", "10_story_inside", name="inside v1")
        daemon.start()
        daemon.wait_row("10_story_inside")
        folder = stories.root / "2_current"
        folder.chmod(0)
        try:
            stories.write("1_backlog", "11_story_outside", name="outside")
            daemon.wait_row("11_story_outside", timeout=10)
            stories.write("1_backlog", "11_story_outside", name="outside v2")
            daemon.wait_row("11_story_outside", lambda r: r["name"] == "outside v2", timeout=10)
            info = wait_until(lambda: (s := status(daemon))["state"] == "degraded" and s,
                              timeout=10, what="status degraded")
            assert any(p.startswith("2_current: cannot be read") for p in info["folder_problems"])
            assert daemon.row("10_story_inside") is not None  # kept, not taken for deleted
        finally:
            folder.chmod(0o755)
        stories.write("2_current", "10_story_inside", name="inside v2")  # after the chmod
        daemon.wait_row("10_story_inside", lambda r: r["name"] == "inside v2", timeout=10)
        wait_until(lambda: status(daemon)["state"] == "ready", timeout=10, what="ready again")
        assert daemon.stop() == 0

    def test_story_moved_into_an_unreadable_folder_is_not_deleted(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """A story moved (while the daemon was stopped) into a folder that is then
        unreadable is not taken for deleted at the next start: it may be in there.
        Once the folder is readable it shows in its new stage."""
        daemon.prefix = list(modes_bind_prefix() or ())
        stories.write("1_backlog", "15_story_moving", name="moving")
        daemon.start()
        daemon.wait_row("15_story_moving")
        assert daemon.stop() == 0
        stories.move("15_story_moving", "1_backlog", "2_current")  # as a git pull would
        folder = stories.root / "2_current"
        folder.chmod(0)
        try:
            daemon.start()
            stories.write("1_backlog", "16_story_marker", name="after the catch-up")
            daemon.wait_row("16_story_marker", timeout=10)
            assert daemon.row("15_story_moving") is not None
            assert daemon.query("SELECT count(*) FROM story_history WHERE story_id = ? AND "
                                "kind = 'deleted'", ("15_story_moving",)) == [(0,)]
        finally:
            folder.chmod(0o755)
        daemon.wait_row("15_story_moving", lambda r: r["stage"] == "2_current", timeout=10)
        assert daemon.stop() == 0

    def test_started_while_unreadable_watches_it_once_readable(self, stories: Stories,
                                                               daemon: DaemonProcess) -> None:
        """A daemon started while a stage folder is unreadable starts, reports it, and
        watches the folder once it can be read: its files then land."""
        daemon.prefix = list(modes_bind_prefix() or ())
        folder = stories.root / "2_current"
        folder.chmod(0)
        try:
            daemon.start()
            stories.write("1_backlog", "12_story_a", name="a")
            daemon.wait_row("12_story_a", timeout=10)
            info = wait_until(lambda: (s := status(daemon))["state"] == "degraded" and s,
                              timeout=10, what="status degraded")
            assert any(p.startswith("2_current: not watched: cannot be read")
                       for p in info["folder_problems"]), info
        finally:
            folder.chmod(0o755)
        wait_until(lambda: status(daemon)["state"] == "ready", timeout=10, what="watched")
        stories.write("2_current", "13_story_b", story_text(name="b"))
        daemon.wait_row("13_story_b", timeout=10)
        assert daemon.stop() == 0


def cli_with_an_unreadable_stage(stories: Stories, daemon: DaemonProcess,
                                 *args: str) -> subprocess.CompletedProcess[str]:
    """A `pipelined` command run (bound by file modes) while 2_current has mode 000."""
    folder = stories.root / "2_current"
    folder.chmod(0)
    try:
        return subprocess.run(
            [*(modes_bind_prefix() or ()), sys.executable, "-m", "pipelined", *args,
             "--root", str(stories.root), "--db", str(daemon.db)],
            capture_output=True, text=True, check=False, timeout=DEADLINE_S)
    finally:
        folder.chmod(0o755)


@needs_permissions
def test_doctor_names_an_unreadable_stage_folder_once(stories: Stories,
                                                      daemon: DaemonProcess) -> None:
    """doctor reports an unreadable stage folder as one problem, and does not report
    each of its stories as missing (unreadable is not empty)."""
    for number in range(3):
        stories.write("2_current", f"{20 + number}_story_in", name="in")
    daemon.start()
    daemon.wait_row("22_story_in")
    assert daemon.stop() == 0
    done = cli_with_an_unreadable_stage(stories, daemon, "doctor", "--json")
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["drift"] == [
        {"path": "2_current/", "problem": "stage folder cannot be read (Permission denied)"}]


@needs_permissions
def test_rebuild_refuses_an_unreadable_stage_folder(stories: Stories,
                                                    daemon: DaemonProcess) -> None:
    """`rebuild` must see every story: an unreadable stage folder is one line and exit 1,
    and the old database is not moved aside."""
    stories.write("2_current", "17_story_hidden", name="hidden")
    daemon.start()
    daemon.wait_row("17_story_hidden")
    assert daemon.stop() == 0
    done = cli_with_an_unreadable_stage(stories, daemon, "rebuild")
    folder = stories.root / "2_current"
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"Error: {folder}: cannot read the stage folder (Permission denied); its stories "
        "would be left out"]
    assert not list(daemon.db.parent.glob("*.old-*"))
    assert daemon.row("17_story_hidden") is not None


@pytest.mark.skipif(not userns_inotify_limits(),
                    reason="needs unprivileged user namespaces with their own inotify limits")
def test_watch_limit_reached_while_running_is_degraded(stories: Stories,
                                                       daemon: DaemonProcess) -> None:
    """The inotify watch limit reached while running (a stage folder re-created needs a
    new watch): status says degraded and names the folder instead of 'ready', and the
    folder's files still land, found by stat passes."""
    trigger = daemon.workdir / "lower-the-limit"
    # In a user namespace of its own, whose limit only this test lowers: once the
    # trigger exists, no new watch can be added (the daemon holds 4: root + 3 stages).
    # The shell hands SIGTERM on to the daemon and exits with the daemon's status.
    script = (f'echo 100 > /proc/sys/user/max_inotify_watches; "$@" & pid=$!; '
              f"trap 'kill -TERM $pid' TERM; "
              f'while [ ! -e {trigger} ]; do sleep 0.05; done; '
              f'echo 1 > /proc/sys/user/max_inotify_watches; touch {trigger}.done; '
              f'wait $pid; code=$?; if [ $code -ge 128 ]; then wait $pid; code=$?; fi; '
              f'exit $code')
    daemon.prefix = ["unshare", "-U", "-r", "sh", "-c", script, "sh"]
    daemon.start()
    trigger.touch()
    wait_until(lambda: Path(f"{trigger}.done").exists(), what="the limit lowered")
    os.rename(stories.root / "4_merge", daemon.workdir / "old_merge")
    (stories.root / "4_merge").mkdir()
    info = wait_until(lambda: (s := status(daemon))["state"] == "degraded" and s,
                      timeout=15, what="status degraded")
    assert any(p.startswith("4_merge: not watched") and "max_user_watches" in p
               for p in info["folder_problems"]), info
    stories.write("4_merge", "20_story_unwatched", name="found by a stat pass")
    daemon.wait_row("20_story_unwatched", timeout=15)
    assert daemon.stop() == 0
