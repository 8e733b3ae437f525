"""Start and stop: READY, clean exits on SIGTERM/SIGINT, the final flush."""

from __future__ import annotations

import signal
import threading
import time

from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, story_text


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


class TestShutdownDuringBurst:
    @staticmethod
    def write_burst(stories: Stories, count: int, started: threading.Event,
                    stop: threading.Event) -> threading.Thread:
        text = story_text(name="burst", body="b" * 1500)

        def write() -> None:
            for n in range(count):
                if stop.is_set():
                    return
                (stories.root / STAGES[n % 3] / f"{n + 1}_story_burst.md").write_text(text)
                if n == 2000:
                    started.set()

        thread = threading.Thread(target=write)
        thread.start()
        return thread

    def test_sigterm_during_a_big_burst(self, stories: Stories, daemon: DaemonProcess) -> None:
        """SIGTERM while 10,000 files are being written: exit 0 within 10 s, and every
        file that existed when the signal came is committed."""
        daemon.start()
        started, stop = threading.Event(), threading.Event()
        writer = self.write_burst(stories, 10_000, started, stop)
        assert started.wait(60)
        before = {p.stem for s in STAGES for p in (stories.root / s).glob("*.md")}
        signalled = time.monotonic()
        try:
            assert daemon.stop(signal.SIGTERM, timeout=10) == 0
        finally:
            stop.set()
            writer.join()
        assert time.monotonic() - signalled < 10
        assert before <= set(daemon.rows())

    def test_second_sigterm_skips_the_final_flush(self, stories: Stories,
                                                  daemon: DaemonProcess) -> None:
        """A second SIGTERM exits at once; the next start still ends with no drift."""
        daemon.start()
        started, stop = threading.Event(), threading.Event()
        writer = self.write_burst(stories, 10_000, started, stop)
        assert started.wait(60)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.wait_log("daemon.stopping")  # the first one is being handled
            assert daemon.stop(signal.SIGTERM, timeout=10) == 0  # the second
        finally:
            stop.set()
            writer.join()
        assert [e for e in daemon.log_events() if e.get("event") == "daemon.stopping_now"]
        daemon.start()
        assert folder_matches_db(stories, daemon)
