"""Settings that shape what is stored are part of the stored state.

A row made under one size limit or one version of the parse rules is stale
under another, though its file did not change: the restart re-reads what the
change affects, and only that.
"""

from __future__ import annotations

import json
from typing import ClassVar

import apsw
from conftest import DaemonProcess, Stories, story_text

from pipelined.shaping import reread_for_settings

BIG = story_text(name="big one", body="x" * 3000 + "\n")


def startup(daemon: DaemonProcess, start: int) -> dict[str, object]:
    """The `daemon.startup` line of the daemon's `start`-th start (logged after READY
    when nothing changed, so waited for)."""
    return daemon.wait_log("daemon.startup", count=start)


class TestSizeLimitChanged:
    def test_raised_limit_rereads_the_oversized_file(self, stories: Stories,
                                                     daemon: DaemonProcess) -> None:
        """A story over the old limit gets its content and fields, and loses its error,
        when the daemon restarts with a higher limit; the small story is not re-read."""
        stories.write("1_backlog", "1_story_big", BIG)
        stories.write("1_backlog", "2_story_small", name="small")
        daemon.start("--max-file-bytes", "1000")
        row = daemon.wait_row("1_story_big")
        assert row["content"] is None and row["name"] is None
        assert "over the 1000-byte limit" in daemon.errors("1_story_big")[0][1]
        assert daemon.stop() == 0

        daemon.start("--max-file-bytes", "100000")
        row = daemon.wait_row("1_story_big", lambda r: r["content"] == BIG)
        assert row["name"] == "big one"
        assert daemon.errors("1_story_big") == []
        assert startup(daemon, 2)["files_reread"] == 1
        assert daemon.stop() == 0

        daemon.start("--max-file-bytes", "100000")  # unchanged: nothing re-read
        assert startup(daemon, 3)["files_reread"] == 0
        assert daemon.stop() == 0

    def test_lowered_limit_applies_to_unchanged_files(self, stories: Stories,
                                                      daemon: DaemonProcess) -> None:
        """A limit lowered between runs applies to files that did not change: the
        now-oversized story loses its content and records the error."""
        stories.write("2_current", "3_story_big", BIG)
        daemon.start()
        daemon.wait_row("3_story_big", lambda r: r["content"] == BIG)
        assert daemon.stop() == 0
        daemon.start("--max-file-bytes", "1000")
        daemon.wait_row("3_story_big", lambda r: r["content"] is None)
        assert "over the 1000-byte limit" in daemon.errors("3_story_big")[0][1]
        assert daemon.stop() == 0


def test_other_parser_version_rereads_every_story(stories: Stories,
                                                  daemon: DaemonProcess) -> None:
    """Rows recorded under other parse rules (here: a database that says version 1)
    are all re-read at the next start, and the new version is recorded."""
    for number in range(1, 6):
        stories.write("1_backlog", f"{number}_story_s", name=f"s{number}")
    daemon.start()
    daemon.wait_row("5_story_s")
    assert daemon.stop() == 0
    conn = apsw.Connection(str(daemon.db))
    stored = json.loads(conn.execute(
        "SELECT value FROM daemon_meta WHERE key = 'stored_with'").fetchone()[0])
    conn.execute("UPDATE daemon_meta SET value = ? WHERE key = 'stored_with'",
                 (json.dumps({**stored, "parser_version": 1}),))
    conn.close()
    daemon.start()
    assert startup(daemon, 2)["files_reread"] == 5
    assert daemon.stop() == 0
    assert json.loads(daemon.query("SELECT value FROM daemon_meta WHERE key = "
                                   "'stored_with'")[0][0]) == stored


class TestRereadForSettings:
    BY_PATH: ClassVar[dict[str, tuple[int, int, int]]] = {
        "1_backlog/1_a.md": (1, 500, 1), "1_backlog/2_b.md": (1, 5000, 2),
        "2_current/3_c.md": (1, 50_000, 3)}

    def test_limit_change_affects_files_above_the_smaller_limit(self) -> None:
        """Raising or lowering 1,000 <-> 10,000 affects the files over 1,000 bytes."""
        before = json.dumps({"max_file_bytes": 1000, "parser_version": 2})
        now = json.dumps({"max_file_bytes": 10_000, "parser_version": 2})
        assert reread_for_settings(before, now, self.BY_PATH) == {"2_b", "3_c"}
        assert reread_for_settings(now, before, self.BY_PATH) == {"2_b", "3_c"}

    def test_nothing_recorded_or_unreadable_record_means_everything(self) -> None:
        """A database older than the record, or a record that is not JSON: every story."""
        now = json.dumps({"max_file_bytes": 1000, "parser_version": 2})
        assert reread_for_settings(None, now, self.BY_PATH) == {"1_a", "2_b", "3_c"}
        assert reread_for_settings("{oops", now, self.BY_PATH) == {"1_a", "2_b", "3_c"}


def test_rebuild_records_the_settings(stories: Stories, daemon: DaemonProcess) -> None:
    """A database made by `rebuild` records the settings it was made with, so the next
    start re-reads nothing."""
    for number in range(1, 4):
        stories.write("1_backlog", f"{number}_story_r", name=f"r{number}")
    assert daemon.cli("rebuild").returncode == 0
    daemon.start()
    assert startup(daemon, 1)["files_reread"] == 0
    assert daemon.stop() == 0
