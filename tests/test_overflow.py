"""Lost events: an inotify queue overflow, a 20,000-file burst, a dead observer."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, story_text, wait_until

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


def _can_shrink_inotify_queue() -> bool:
    return MAX_QUEUED.exists() and os.access(MAX_QUEUED, os.W_OK)


class TestOverflow:
    @pytest.mark.skipif(not _can_shrink_inotify_queue(),
                        reason="needs write access to /proc/sys/fs/inotify (root)")
    def test_forced_overflow_ends_with_every_story(self, stories: Stories,
                                                   daemon: DaemonProcess) -> None:
        """With a tiny kernel queue, a burst overflows it; the stat pass recovers all."""
        old = MAX_QUEUED.read_text()
        MAX_QUEUED.write_text("16\n")  # read by inotify_init, i.e. when the daemon starts
        try:
            daemon.start()
        finally:
            MAX_QUEUED.write_text(old)
        text = story_text(name="burst")
        assert daemon.proc is not None
        # Stop the daemon while the files are written: nobody reads its inotify
        # queue, so it overflows whatever the machine's load.
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            for n in range(3000):
                (stories.root / STAGES[n % 3] / f"{n + 1}_story_burst.md").write_text(text)
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        daemon.wait_log("watch.queue_overflow")
        wait_until(lambda: folder_matches_db(stories, daemon), timeout=60,
                   what="every story after the overflow")
        assert len(daemon.rows()) == 3000


class TestBigBurst:
    @pytest.mark.slow
    def test_twenty_thousand_creates(self, stories: Stories, daemon: DaemonProcess) -> None:
        """20,000 files created while the daemon runs all end up in the database."""
        daemon.start()
        text = story_text(name="many", body="x" * 200)
        for n in range(20_000):
            (stories.root / STAGES[n % 3] / f"{n + 1}_story_many.md").write_text(text)
        wait_until(lambda: daemon.query("SELECT count(*) FROM pipeline_items")[0][0] == 20_000,
                   timeout=120, interval=0.5, what="20,000 rows")
        wait_until(lambda: folder_matches_db(stories, daemon), timeout=60, interval=0.5,
                   what="no drift")


class TestObserverHealth:
    def test_dead_observer_is_recreated(self, tmp_path: Path) -> None:
        """A dead observer is noticed, re-created, and its new watches deliver events."""
        from pipelined.watch import Coalescer, StageWatcher, StoryEventHandler

        stories = Stories(tmp_path / "root")
        coalescer = Coalescer(settle_s=0.01, cap_s=1.0)
        handler = StoryEventHandler(stories.root, STAGES, coalescer, lambda: None)
        watcher = StageWatcher(stories.root, STAGES, handler)
        watcher.start()
        try:
            assert watcher.ensure_alive() is False
            watcher.observer.stop()  # what an exception in the observer thread amounts to
            watcher.observer.join(10)
            assert not watcher.is_alive()
            assert watcher.ensure_alive() is True
            assert watcher.is_alive()
            stories.write("2_current", "5_story_after")
            settled = wait_until(lambda: coalescer.take(0.1).story_ids, what="an event")
            assert settled == {"5_story_after"}
        finally:
            watcher.stop()
