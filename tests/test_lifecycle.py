"""Start and stop: READY, clean exits on SIGTERM/SIGINT, the final flush."""

from __future__ import annotations

import signal

from conftest import DaemonProcess, Stories


class TestShutdown:
    def test_sigterm_right_after_ready(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A SIGTERM at once after READY (while the state still loads) exits 0, every time."""
        for n in range(20):
            stories.write("1_backlog", f"{n + 1}_story_s")
        daemon.start()
        assert daemon.stop() == 0
        for _ in range(5):
            daemon.start()
            assert daemon.stop() == 0
        assert "STOPPING=1" in daemon.messages

    def test_sigint_stops_cleanly(self, stories: Stories, daemon: DaemonProcess) -> None:
        """SIGINT (Ctrl-C) stops the daemon with exit 0 and no traceback."""
        daemon.start()
        assert daemon.stop(signal.SIGINT) == 0
        assert "Traceback" not in daemon.log_tail(200)

    def test_pending_changes_are_flushed_on_stop(self, stories: Stories,
                                                 daemon: DaemonProcess) -> None:
        """Files written just before SIGTERM are in the database after the exit."""
        daemon.start()
        for n in range(30):
            stories.write("2_current", f"{n + 1}_story_late", name=f"late {n}")
        assert daemon.stop() == 0
        rows = daemon.rows()
        assert all(rows[f"{n + 1}_story_late"]["name"] == f"late {n}" for n in range(30))

    def test_stop_checkpoints_the_wal(self, stories: Stories, daemon: DaemonProcess) -> None:
        """A clean stop leaves an empty write-ahead log."""
        stories.write("1_backlog", "1_story_a")
        daemon.start()
        assert daemon.stop() == 0
        wal = daemon.db.with_name(daemon.db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0

    def test_status_message_counts_stories(self, stories: Stories,
                                           daemon: DaemonProcess) -> None:
        """READY carries a STATUS line with the number of stories."""
        for n in range(3):
            stories.write("4_merge", f"{n + 1}_story_s")
        daemon.start()
        ready = next(m for m in daemon.messages if "READY=1" in m)
        assert "STATUS=in sync: 3 stories" in ready.splitlines()
