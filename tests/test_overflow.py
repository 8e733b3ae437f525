"""Lost events: an inotify queue overflow, a 20,000-file burst, a dead observer."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, story_text, wait_until

from pipelined.watch import Coalescer, StageWatcher, StoryEventHandler

MAX_QUEUED = Path("/proc/sys/fs/inotify/max_queued_events")


class TestOverflow:
    @pytest.mark.skipif(not MAX_QUEUED.exists(), reason="needs /proc/sys/fs/inotify")
    def test_forced_overflow_ends_with_every_story(self, stories: Stories,
                                                   daemon: DaemonProcess) -> None:
        """A burst of more events than the kernel queues overflows it; the stat pass
        recovers every story.

        The machine's queue is left as it is (a smaller one would be read by every
        inotify instance the other tests start meanwhile): the daemon is stopped
        while more writes than the queue holds go to two stories in turn (two
        events in a row are never merged into one).
        """
        limit = int(MAX_QUEUED.read_text())
        if limit > 1 << 20:
            pytest.skip(f"the kernel queues {limit} events: too many writes to overflow it")
        daemon.start()
        text = story_text(name="burst")
        assert daemon.proc is not None
        # Stop the daemon while the files are written: nobody reads its inotify
        # queue, so it overflows whatever the machine's load.
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            for n in range(300):
                (stories.root / STAGES[n % 3] / f"{n + 1}_story_burst.md").write_text(text)
            first, second = (os.open(stories.root / STAGES[n % 3] / f"{n + 1}_story_burst.md",
                                     os.O_WRONLY | os.O_APPEND) for n in (0, 1))
            try:
                for _ in range(limit // 2 + 1):  # an IN_MODIFY each
                    os.write(first, b"a")
                    os.write(second, b"b")
            finally:
                os.close(first)
                os.close(second)
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        daemon.wait_log("watch.queue_overflow")
        wait_until(lambda: folder_matches_db(stories, daemon), timeout=60,
                   what="every story after the overflow")
        assert len(daemon.rows()) == 300


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


class Watching(NamedTuple):
    stories: Stories
    coalescer: Coalescer
    watcher: StageWatcher


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[Watching]:
    """A StageWatcher in-process on a fresh root, its events into a fast Coalescer."""
    stories = Stories(tmp_path / "root")
    coalescer = Coalescer(settle_s=0.01, cap_s=1.0)
    watcher = StageWatcher(stories.root, STAGES,
                           StoryEventHandler(stories.root, STAGES, coalescer, lambda: None))
    watcher.start()
    yield Watching(stories, coalescer, watcher)
    watcher.stop()


class TestObserverHealth:
    def test_dead_observer_is_recreated(self, watching: Watching) -> None:
        """A dead observer is noticed, re-created, and its new watches deliver events."""
        stories, coalescer, watcher = watching
        assert watcher.ensure_alive() is False
        watcher.observer.stop()  # what an exception in the observer thread amounts to
        watcher.observer.join(10)
        assert not watcher.is_alive()
        assert watcher.ensure_alive() is True
        assert watcher.is_alive()
        stories.write("2_current", "5_story_after")
        settled = wait_until(lambda: coalescer.take(0.1).story_ids, what="an event")
        assert settled == {"5_story_after"}

    def test_a_stage_folder_made_again_is_watched_again(self, watching: Watching) -> None:
        """`rm -r 2_current && mkdir 2_current`: the folder may come back with its old
        inode (ext4 reuses them). Its old emitter stops; that is no dead observer (it
        was logged as one, at error level, and the whole observer re-created), and the
        new folder is watched again."""
        stories, coalescer, watcher = watching
        folder = stories.root / "2_current"
        shutil.rmtree(folder)
        folder.mkdir()
        wait_until(lambda: not all(e.is_alive() for e in watcher.observer.emitters),
                   what="the old folder's emitter to stop")
        assert watcher.is_alive()
        assert watcher.ensure_watches() is True
        assert all(e.is_alive() for e in watcher.observer.emitters)
        coalescer.take(0.1)  # the folder's own events
        stories.write("2_current", "6_story_again")
        settled = wait_until(lambda: coalescer.take(0.1).story_ids, what="an event")
        assert settled == {"6_story_again"}
