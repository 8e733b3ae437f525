"""Unit tests of `pipelined.watch`: the settle/coalesce step and the event handler.

The coalescer runs on a scripted clock; the handler is fed real watchdog event
objects, built by hand (no observer, no filesystem events).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from pipelined.watch import Coalescer, Settled, StoryEventHandler

SETTLE_S = 0.1
# StoryEventHandler.on_any_event's fallback calls
# log.exception("watch.handler_failed", event=repr(event)); structlog's first
# parameter is already named `event`, so the fallback itself raises TypeError
# and the exception escapes into the observer thread.
CAP_S = 3.0
STAGES = ("1_backlog", "2_current", "4_merge")


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SteppingClock(FakeClock):
    """A clock that moves forward a little every time it is read."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def coalescer(clock: FakeClock) -> Coalescer:
    return Coalescer(SETTLE_S, CAP_S, clock=clock)


class TestCoalescer:
    def test_nothing_pending_is_not_ready(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """With no event at all there is nothing to flush, however long it is quiet."""
        clock.advance(100)

        assert coalescer.ready() is False
        assert coalescer.take(0) == Settled()

    def test_not_ready_until_quiet_for_settle(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """Touched ids wait until the tree has been quiet for settle_s."""
        coalescer.touch(["10_a"])
        clock.advance(SETTLE_S * 0.9)

        assert coalescer.ready() is False
        assert coalescer.take(0) == Settled()

        clock.advance(SETTLE_S * 0.1)

        assert coalescer.ready() is True
        assert coalescer.take(0) == Settled({"10_a"})

    def test_quiet_is_across_the_whole_tree(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """An event for another id restarts the quiet period for every pending id."""
        coalescer.touch(["10_a"])
        clock.advance(0.08)
        coalescer.touch(["20_b"])
        clock.advance(0.08)

        assert coalescer.ready() is False  # 10_a alone has been quiet 0.16 s

        clock.advance(0.02)

        assert coalescer.take(0) == Settled({"10_a", "20_b"})

    def test_git_checkout_burst_is_one_flush(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """A delete and the create of the same id in one burst come out as one id, once."""
        coalescer.touch(["10_x"])  # 1_backlog/10_x.md deleted
        clock.advance(0.05)
        coalescer.touch(["30_y"])
        clock.advance(0.05)
        coalescer.touch(["10_x"])  # 4_merge/10_x.md created
        clock.advance(SETTLE_S)

        assert coalescer.take(0) == Settled({"10_x", "30_y"})

    def test_never_quiet_burst_is_flushed_at_cap(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """A burst that never goes quiet is flushed cap_s after its first event."""
        step = SETTLE_S / 2
        coalescer.touch(["10_first"])
        start = clock.now
        n = 0
        while clock.now - start < CAP_S - step / 2:
            assert coalescer.ready() is False, f"flushed early at +{clock.now - start:.2f}s"
            clock.advance(step)
            n += 1
            coalescer.touch([f"{n}_s"])

        clock.now = start + CAP_S
        coalescer.touch(["99_last"])

        assert coalescer.ready() is True
        settled = coalescer.take(0)
        assert "10_first" in settled.story_ids
        assert "99_last" in settled.story_ids
        assert len(settled.story_ids) == n + 2

    def test_cap_counts_from_first_event_of_a_burst(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """After a flush the cap starts again from the next burst's first event."""
        coalescer.touch(["10_a"])
        clock.advance(SETTLE_S)
        coalescer.take(0)
        clock.advance(10 * CAP_S)  # a long quiet gap

        coalescer.touch(["20_b"])

        assert coalescer.ready() is False

    def test_note_activity_delays_the_flush(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """An event that marks no id still means the tree is not quiet yet."""
        coalescer.touch(["10_a"])
        clock.advance(0.08)
        coalescer.note_activity()
        clock.advance(0.08)

        assert coalescer.ready() is False

        clock.advance(0.02)

        assert coalescer.ready() is True

    def test_note_activity_alone_flushes_nothing(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """Activity with no touched id never makes a flush."""
        coalescer.note_activity()
        clock.advance(CAP_S * 2)

        assert coalescer.ready() is False
        assert coalescer.take(0) == Settled()

    def test_note_activity_cannot_delay_past_cap(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """Endless activity still flushes touched ids at the cap."""
        coalescer.touch(["10_a"])
        start = clock.now
        while clock.now < start + CAP_S - 0.05:
            clock.advance(0.05)
            coalescer.note_activity()
            assert coalescer.ready() is False
        clock.now = start + CAP_S
        coalescer.note_activity()

        assert coalescer.ready() is True
        assert coalescer.take(0).story_ids == {"10_a"}

    def test_quiet_for(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """quiet_for is the time since the last event of any kind."""
        coalescer.touch(["10_a"])
        clock.advance(0.5)
        coalescer.note_activity()
        clock.advance(0.25)

        assert coalescer.quiet_for() == pytest.approx(0.25)

    def test_take_returns_pending_once_and_clears(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """take hands over the pending set once; the next take finds nothing."""
        coalescer.touch(["10_a", "20_b"])
        clock.advance(SETTLE_S)

        first = coalescer.take(0)
        second = coalescer.take(0)

        assert first == Settled({"10_a", "20_b"}, rescan=False, stopping=False)
        assert second == Settled()
        assert coalescer.ready() is False

    def test_taken_set_is_not_shared(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """Ids touched after a take do not leak into the set already handed over."""
        coalescer.touch(["10_a"])
        clock.advance(SETTLE_S)
        taken = coalescer.take(0)

        coalescer.touch(["20_b"])

        assert taken.story_ids == {"10_a"}

    def test_take_waits_for_the_settle(self) -> None:
        """take(timeout) blocks until the burst settles, then returns it."""
        clock = SteppingClock(step=0.01)
        coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock)
        coalescer.touch(["10_a"])
        touched_at = clock.now

        settled = coalescer.take(timeout=5.0)

        assert settled.story_ids == {"10_a"}
        assert clock.now - touched_at >= SETTLE_S

    def test_take_times_out_empty(self) -> None:
        """take(timeout) with nothing settling returns an empty Settled at the deadline."""
        clock = SteppingClock(step=0.05)
        coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock)
        start = clock.now

        assert coalescer.take(timeout=0.2) == Settled()
        assert clock.now - start >= 0.2

    def test_rescan_request_is_flushed_after_settle(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """A rescan request settles like an event and is handed over once."""
        coalescer.request_rescan()

        assert coalescer.ready() is False

        clock.advance(SETTLE_S)

        assert coalescer.take(0) == Settled(set(), rescan=True)
        assert coalescer.take(0) == Settled()

    def test_rescan_and_ids_together(self, coalescer: Coalescer, clock: FakeClock) -> None:
        """Ids touched in the same burst as a rescan request come out with it."""
        coalescer.touch(["10_a"])
        coalescer.request_rescan()
        clock.advance(SETTLE_S)

        assert coalescer.take(0) == Settled({"10_a"}, rescan=True)

    def test_stop_returns_immediately_with_stopping(
        self, coalescer: Coalescer, clock: FakeClock
    ) -> None:
        """After stop, take returns at once with stopping=True and what was pending."""
        coalescer.touch(["10_a"])
        coalescer.stop()

        settled = coalescer.take(timeout=60.0)

        assert settled == Settled({"10_a"}, rescan=False, stopping=True)
        assert coalescer.take(timeout=60.0) == Settled(set(), stopping=True)

    def test_stop_wakes_a_waiting_take(self) -> None:
        """stop() from another thread wakes a take that is waiting."""
        coalescer = Coalescer(SETTLE_S, CAP_S)  # real clock: take really waits
        results: list[Settled] = []
        taker = threading.Thread(target=lambda: results.append(coalescer.take(timeout=60.0)))
        taker.start()

        coalescer.stop()
        taker.join(timeout=10)

        assert not taker.is_alive()
        assert results == [Settled(set(), stopping=True)]

    def test_touch_from_threads(self, clock: FakeClock) -> None:
        """Touches from several threads all land in the pending set."""
        coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock)

        def touch_many(thread_number: int) -> None:
            for j in range(50):
                coalescer.touch([f"{thread_number}_{j}"])

        threads = [threading.Thread(target=touch_many, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        clock.advance(SETTLE_S)

        assert len(coalescer.take(0).story_ids) == 400


class Recorder:
    """A stage-folder-change callback that counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> None:
        self.calls += 1
        if self.fail:
            raise RuntimeError("callback broke")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def make_handler(
    root: Path, clock: FakeClock, fail: bool = False
) -> tuple[StoryEventHandler, Coalescer, Recorder]:
    coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock)
    recorder = Recorder(fail=fail)
    return StoryEventHandler(root, STAGES, coalescer, recorder), coalescer, recorder


def settle(coalescer: Coalescer, clock: FakeClock) -> Settled:
    clock.advance(CAP_S)
    return coalescer.take(0)


class TestStoryEventHandler:
    @pytest.mark.parametrize(
        "event_type", [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileClosedEvent]
    )
    def test_file_event_touches_the_id(
        self, root: Path, clock: FakeClock, event_type: type[FileSystemEvent]
    ) -> None:
        """Any file event on a story path touches its id; the event type does not matter."""
        handler, coalescer, recorder = make_handler(root, clock)

        handler.dispatch(event_type(str(root / "1_backlog" / "10_story_login.md")))

        assert settle(coalescer, clock) == Settled({"10_story_login"})
        assert recorder.calls == 0

    def test_move_between_stages_touches_one_id(self, root: Path, clock: FakeClock) -> None:
        """A move from one stage to another touches the id (both ends are the same id)."""
        handler, coalescer, _ = make_handler(root, clock)

        handler.dispatch(
            FileMovedEvent(str(root / "1_backlog" / "10_x.md"), str(root / "4_merge" / "10_x.md"))
        )

        assert settle(coalescer, clock).story_ids == {"10_x"}

    def test_rename_touches_both_ids(self, root: Path, clock: FakeClock) -> None:
        """A rename of a story to another id touches the old and the new id."""
        handler, coalescer, _ = make_handler(root, clock)

        handler.dispatch(
            FileMovedEvent(
                str(root / "2_current" / "10_old.md"), str(root / "2_current" / "11_new.md")
            )
        )

        assert settle(coalescer, clock).story_ids == {"10_old", "11_new"}

    def test_editor_safe_write_touches_the_story(self, root: Path, clock: FakeClock) -> None:
        """A leftover renamed over a story (safe write) touches the story's id."""
        handler, coalescer, _ = make_handler(root, clock)
        stage = root / "2_current"

        handler.dispatch(FileCreatedEvent(str(stage / "10_x.md___jb_tmp___")))
        handler.dispatch(FileMovedEvent(str(stage / "10_x.md___jb_tmp___"), str(stage / "10_x.md")))

        assert settle(coalescer, clock).story_ids == {"10_x"}

    @pytest.mark.parametrize(
        "name",
        [
            ".10_x.md.swp",
            "10_x.md.swx",
            "10_x.md~",
            "#10_x.md#",
            ".#10_x.md",
            "4913",
            "10_x.md.tmp",
            "10_x.md___jb_old___",
            ".hidden.md",
            "notes.txt",
            "readme.md",
        ],
    )
    def test_leftovers_touch_nothing_but_count_as_activity(
        self, root: Path, clock: FakeClock, name: str
    ) -> None:
        """Editor leftovers mark no id, but they do keep the tree from being quiet."""
        handler, coalescer, _ = make_handler(root, clock)
        coalescer.touch(["10_real"])
        clock.advance(0.08)

        handler.dispatch(FileCreatedEvent(str(root / "1_backlog" / name)))
        clock.advance(0.08)

        assert coalescer.ready() is False
        assert settle(coalescer, clock).story_ids == {"10_real"}

    def test_unwatched_stage_and_sub_folder_touch_nothing(
        self, root: Path, clock: FakeClock
    ) -> None:
        """Story-like files in an unwatched stage or a sub-folder mark no id."""
        handler, coalescer, recorder = make_handler(root, clock)

        handler.dispatch(FileCreatedEvent(str(root / "3_qa" / "10_x.md")))
        handler.dispatch(FileCreatedEvent(str(root / "1_backlog" / "sub" / "10_x.md")))
        handler.dispatch(FileCreatedEvent(str(root / ".git" / "index.lock")))

        assert settle(coalescer, clock) == Settled()
        assert recorder.calls == 0

    @pytest.mark.parametrize(
        "event",
        [
            lambda root: DirDeletedEvent(str(root / "2_current")),
            lambda root: DirCreatedEvent(str(root / "4_merge")),
            lambda root: DirMovedEvent(str(root / "1_backlog"), str(root / "old_backlog")),
            lambda root: DirMovedEvent(str(root / "tmp"), str(root / "1_backlog")),
            lambda root: DirDeletedEvent(str(root)),
        ],
        ids=["deleted", "created", "moved-away", "moved-in", "root-deleted"],
    )
    def test_stage_folder_event_asks_for_rescan(
        self, root: Path, clock: FakeClock, event: object
    ) -> None:
        """A stage folder deleted, created or moved asks for a rescan and a re-watch."""
        handler, coalescer, recorder = make_handler(root, clock)

        handler.dispatch(event(root))  # type: ignore[operator]

        assert recorder.calls == 1
        assert settle(coalescer, clock) == Settled(set(), rescan=True)

    def test_other_folder_events_are_ignored(self, root: Path, clock: FakeClock) -> None:
        """Directory events for sub-folders, unwatched stages and .git ask for nothing."""
        handler, coalescer, recorder = make_handler(root, clock)

        handler.dispatch(DirCreatedEvent(str(root / "1_backlog" / "archive")))
        handler.dispatch(DirDeletedEvent(str(root / "3_qa")))
        handler.dispatch(DirCreatedEvent(str(root / ".git")))
        handler.dispatch(DirModifiedEvent(str(root / "1_backlog" / "archive")))

        assert recorder.calls == 0
        assert settle(coalescer, clock) == Settled()

    def test_bytes_paths(self, root: Path, clock: FakeClock) -> None:
        """Paths that arrive as bytes are decoded and mapped like text paths."""
        handler, coalescer, _ = make_handler(root, clock)

        handler.dispatch(FileCreatedEvent(bytes(root / "1_backlog" / "10_b.md")))

        assert settle(coalescer, clock).story_ids == {"10_b"}

    @pytest.mark.parametrize(
        "event",
        [
            pytest.param(FileCreatedEvent(None)),  # type: ignore[arg-type]
            pytest.param(FileMovedEvent(None, 42)),  # type: ignore[arg-type]
            FileCreatedEvent("\x00/\udcff/1_backlog/10_x.md"),
            FileCreatedEvent(""),
            DirDeletedEvent(""),
        ],
        ids=["none-path", "int-dest", "nul-and-surrogate", "empty", "empty-dir"],
    )
    def test_never_raises(self, root: Path, clock: FakeClock, event: FileSystemEvent) -> None:
        """A weird event never escapes the handler (it would kill the observer thread)."""
        handler, _, _ = make_handler(root, clock)

        handler.dispatch(event)
        handler.on_any_event(event)

    def test_failure_asks_for_rescan(self, root: Path, clock: FakeClock) -> None:
        """When mapping an event fails, the handler falls back to a rescan."""
        handler, coalescer, _ = make_handler(root, clock)

        handler.on_any_event(FileCreatedEvent(None))  # type: ignore[arg-type]

        assert settle(coalescer, clock).rescan is True

    def test_failing_callback_does_not_raise(self, root: Path, clock: FakeClock) -> None:
        """A stage-folder callback that raises is contained, and a rescan is still asked."""
        handler, coalescer, recorder = make_handler(root, clock, fail=True)

        handler.on_any_event(DirDeletedEvent(str(root / "1_backlog")))

        assert recorder.calls == 1
        assert settle(coalescer, clock).rescan is True


class TestPendingBound:
    def test_too_many_ids_become_an_owed_stat_pass(self) -> None:
        """Past max_pending the ids are dropped and a stat pass is owed instead."""
        clock = FakeClock()
        coalescer = Coalescer(0.1, 3.0, clock=clock, max_pending=3)
        coalescer.touch(["1_a", "2_b", "3_c"])
        assert not coalescer.rescan_owed()
        coalescer.touch(["4_d"])
        assert coalescer.rescan_owed()
        clock.advance(0.2)
        settled = coalescer.take(0)
        assert settled.rescan is True
        assert settled.story_ids == set()


QUICK_S = 0.01


class TestQuickSettle:
    """A lone change whose file is whole goes out after QUICK_S of quiet; anything that
    may be part of a larger change keeps the whole SETTLE_S window."""

    @staticmethod
    def quick(clock: FakeClock) -> Coalescer:
        return Coalescer(SETTLE_S, CAP_S, clock=clock, quick_s=QUICK_S)

    def test_a_lone_whole_change_goes_out_after_the_short_quiet(self, clock: FakeClock) -> None:
        coalescer = self.quick(clock)
        coalescer.touch(["10_x"])  # created: not yet whole
        coalescer.touch(["10_x"], complete=True)  # written and closed
        clock.advance(QUICK_S / 2)
        assert not coalescer.ready()
        clock.advance(QUICK_S / 2)
        assert coalescer.ready() and coalescer.take(0).story_ids == {"10_x"}

    @pytest.mark.parametrize("steps", [
        [(["10_x"], False)],  # a write still open (modified, no close yet)
        [(["10_x"], True), (["11_y"], True)],  # two stories
        [(["10_x"], True), (["10_x"], False)],  # closed, then changed again (a delete)
    ])
    def test_anything_else_keeps_the_whole_window(
            self, clock: FakeClock, steps: list[tuple[list[str], bool]]) -> None:
        coalescer = self.quick(clock)
        for ids, complete in steps:
            coalescer.touch(ids, complete=complete)
        clock.advance(SETTLE_S - 0.001)
        assert not coalescer.ready()
        clock.advance(0.001)
        assert coalescer.ready()

    def test_activity_elsewhere_or_a_rescan_keeps_the_whole_window(self,
                                                                    clock: FakeClock) -> None:
        for disturb in ("note_activity", "request_rescan"):
            coalescer = self.quick(clock)
            coalescer.touch(["10_x"], complete=True)
            getattr(coalescer, disturb)()  # vim's 4913, a backup file, a stage folder
            clock.advance(QUICK_S * 2)
            assert not coalescer.ready(), disturb
            clock.advance(SETTLE_S)
            assert coalescer.ready()
            coalescer.take(0)

    def test_git_at_work_keeps_the_whole_window(self, clock: FakeClock) -> None:
        """quick_ok() False (index.lock): the whole window, and quick_ok asked once."""
        asked: list[int] = []

        def git_idle() -> bool:
            asked.append(1)
            return False

        coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock, quick_s=QUICK_S, quick_ok=git_idle)
        coalescer.touch(["10_x"], complete=True)
        clock.advance(QUICK_S)
        assert not coalescer.ready() and not coalescer.ready()
        assert len(asked) == 1
        clock.advance(SETTLE_S)
        assert coalescer.ready()

    def test_the_next_burst_starts_slow_again(self, clock: FakeClock) -> None:
        coalescer = self.quick(clock)
        coalescer.touch(["10_x"], complete=True)
        clock.advance(QUICK_S)
        coalescer.take(0)
        coalescer.touch(["11_y"])
        clock.advance(QUICK_S)
        assert not coalescer.ready()


class TestWholeFileEvents:
    @pytest.mark.parametrize(("event", "complete"), [
        (lambda s: FileClosedEvent(str(s / "10_x.md")), True),
        (lambda s: FileMovedEvent(str(s / ".10_x.md.tmp"), str(s / "10_x.md")), True),
        (lambda s: FileCreatedEvent(str(s / "10_x.md")), False),
        (lambda s: FileModifiedEvent(str(s / "10_x.md")), False),
        (lambda s: FileDeletedEvent(str(s / "10_x.md")), False),
        (lambda s: FileMovedEvent(str(s / "10_x.md"), str(s / "10_x.md~")), False),
    ])
    def test_which_events_leave_a_file_whole(self, root: Path, clock: FakeClock,
                                             event: Any, complete: bool) -> None:
        """Closed after writing, or renamed into place: whole; the rest are steps."""
        coalescer = Coalescer(SETTLE_S, CAP_S, clock=clock, quick_s=QUICK_S)
        handler = StoryEventHandler(root, STAGES, coalescer, Recorder())
        handler.dispatch(event(root / "2_current"))
        clock.advance(QUICK_S)
        assert coalescer.ready() is complete
