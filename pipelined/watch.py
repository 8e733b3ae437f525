"""The watchdog handler, the stage-folder watches, and the settle/coalesce step.

Threads: the watchdog observer thread calls `StoryEventHandler` under its own
lock, so the handler only maps paths to story ids, hands them to the
`Coalescer` and returns; it never parses, writes or raises (an exception would
silently kill the observer). The apply thread takes settled ids from the
coalescer. Only the daemon's main thread schedules or replaces watches.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from pipelined.errors import InotifyLimitError
from pipelined.layout import stage_problem, story_ref
from pipelined.logs import get_logger

__all__ = ["Coalescer", "OverflowHook", "Settled", "StageWatcher", "StoryEventHandler"]

log = get_logger("pipelined.watch")

EVENT_KINDS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent,
    FileAttribEvent,  # a chmod can make an unreadable story readable
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]


MAX_PENDING_IDS = 200_000  # touched ids kept before they are traded for a stat pass


@dataclass(slots=True)
class Settled:
    """What the apply thread takes in one flush."""

    story_ids: set[str] = field(default_factory=set)
    rescan: bool = False
    stopping: bool = False  # the last one: flush it, then stop
    hurried: bool = False  # stop without flushing (a second SIGTERM)


class Coalescer:
    """Touched ids, flushed once the whole tree has been quiet for `settle_s`.

    Thread-safe: the watcher adds, the apply thread takes. A burst that never
    goes quiet is flushed `cap_s` after its first event anyway.

    A lone change goes out sooner, after `quick_s` of quiet: one id touched, its
    last event a file written and closed or renamed into place (`complete`), no
    other event anywhere since, and `quick_ok()` (git not at work: a checkout's
    thousands of files must stay one burst). Anything else — a second id, a file
    still being written, a rename away, an event on another file — keeps the
    whole settle window.
    """

    def __init__(self, settle_s: float, cap_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 max_pending: int = MAX_PENDING_IDS, quick_s: float | None = None,
                 quick_ok: Callable[[], bool] = lambda: True) -> None:
        self.settle_s = settle_s
        self.cap_s = cap_s
        self.max_pending = max_pending
        self.quick_s = settle_s if quick_s is None else min(quick_s, settle_s)
        self._quick_ok = quick_ok
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: set[str] = set()
        self._rescan = False
        self._first: float | None = None
        self._last = -1e9
        self._lone_complete = False  # the burst so far is one id whose file is complete
        self._stopping = False
        self._hurried = False

    def touch(self, story_ids: Iterable[str], complete: bool = False) -> None:
        ids = set(story_ids)
        with self._cond:
            if not ids:
                self._last = self._clock()
                self._lone_complete = False
                return
            self._pending.update(ids)
            self._lone_complete = complete and len(self._pending) == 1
            if len(self._pending) > self.max_pending:
                # Bounded memory while the database is unavailable: drop the ids
                # and owe a stat pass, which finds every change again.
                self._pending.clear()
                if not self._rescan:
                    log.warning("watch.pending_dropped", max_pending=self.max_pending,
                                action="a stat pass is owed")
                self._rescan = True
            self._mark()

    def request_rescan(self) -> None:
        with self._cond:
            self._rescan = True
            self._lone_complete = False
            self._mark()

    def note_activity(self) -> None:
        """An event that marks nothing still means the tree is not quiet."""
        with self._cond:
            self._last = self._clock()
            self._lone_complete = False

    def _mark(self) -> None:
        now = self._clock()
        self._last = now
        if self._first is None:
            self._first = now
        self._cond.notify_all()

    def stop(self, *, hurry: bool = False) -> None:
        """The next take() is the last; with `hurry`, its burst is not to be flushed."""
        with self._cond:
            self._stopping = True
            self._hurried |= hurry
            self._cond.notify_all()

    def rescan_owed(self) -> bool:
        """A stat pass is pending (asked for, or owed after dropping too many ids)."""
        with self._cond:
            return self._rescan

    def quiet_for(self) -> float:
        """Seconds since the last event anywhere in the tree."""
        with self._cond:
            return self._clock() - self._last

    def _due_in(self, now: float) -> float | None:
        """0 if a flush is due now, seconds until it is, or None with nothing pending."""
        if not self._pending and not self._rescan:
            return None
        assert self._first is not None
        quiet_due = self._last + self.settle_s
        if self._lone_complete and not self._rescan and now >= self._last + self.quick_s:
            if self._quick_ok():
                return 0.0
            self._lone_complete = False  # git at work: the whole window, asked once
        elif self._lone_complete and not self._rescan:
            quiet_due = self._last + self.quick_s  # wake to look again then
        cap_due = self._first + self.cap_s
        return max(0.0, min(quiet_due, cap_due) - now)

    def ready(self) -> bool:
        with self._cond:
            return self._due_in(self._clock()) == 0.0

    def take(self, timeout: float) -> Settled:
        """Wait up to `timeout` for a settled burst; may return an empty Settled."""
        deadline = self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                due = self._due_in(now)
                if self._stopping or due == 0.0:
                    break
                remaining = deadline - now
                if remaining <= 0:
                    return Settled()
                self._cond.wait(remaining if due is None else min(due, remaining))
            settled = Settled(self._pending, self._rescan, self._stopping, self._hurried)
            self._pending = set()
            self._rescan = False
            self._first = None
            self._lone_complete = False
            return settled


class StoryEventHandler(FileSystemEventHandler):
    """Maps raw events to story ids; anything touching a stage folder asks for a rescan."""

    def __init__(self, root: Path, stages: Iterable[str], coalescer: Coalescer,
                 on_stage_folder_change: Callable[[], None]) -> None:
        self.root = root
        self.root_str = str(root)
        self.stages = frozenset(stages)
        self.coalescer = coalescer
        self.on_stage_folder_change = on_stage_folder_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._handle(event)
        except Exception:
            log.exception("watch.handler_failed", fs_event=repr(event))
            self.coalescer.request_rescan()

    def _handle(self, event: FileSystemEvent) -> None:
        paths = [os.fsdecode(event.src_path)]
        if event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if event.is_directory:
            for path in paths:
                parent, name = os.path.split(path)
                if (parent == self.root_str and name in self.stages) or path == self.root_str:
                    self.coalescer.request_rescan()
                    self.on_stage_folder_change()
                    return
            return
        refs = [story_ref(self.root, path, self.stages) for path in paths]
        ids = [ref[1] for ref in refs if ref]
        if ids:
            # Whole: written and closed (IN_CLOSE_WRITE), or renamed into place from
            # anywhere. A creation, a write still open, a delete or a rename away are
            # steps of something not yet done (see Coalescer).
            complete = event.event_type == EVENT_TYPE_CLOSED or (
                event.event_type == EVENT_TYPE_MOVED and refs[-1] is not None
                and len(refs) == 2)
            self.coalescer.touch(ids, complete=complete)
        else:
            self.coalescer.note_activity()


class OverflowHook(logging.Handler):
    """watchdog only logs an inotify queue overflow; turn that log into a rescan."""

    def __init__(self, coalescer: Coalescer) -> None:
        super().__init__(level=logging.WARNING)
        self.coalescer = coalescer

    @classmethod
    def attach(cls, coalescer: Coalescer) -> OverflowHook:
        """A hook listening to watchdog's log from now on (until `detach`)."""
        hook = cls(coalescer)
        logging.getLogger("watchdog").addHandler(hook)
        return hook

    def detach(self) -> None:
        logging.getLogger("watchdog").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                log.warning("watch.queue_overflow")
                self.coalescer.request_rescan()
        except Exception:
            pass


def inotify_limit_error(path: Path, exc: OSError) -> InotifyLimitError | None:
    """The one-line error for watchdog's OSError when an inotify limit is reached.

    watchdog 7 raises OSError(ENOSPC) from inotify_add_watch (in
    `observer.start()`, or in `schedule()` once it runs) and OSError(EMFILE)
    from inotify_init (in `Observer()`, and in the first `schedule()`).
    """
    if exc.errno == errno.ENOSPC:
        return InotifyLimitError(path, "fs.inotify.max_user_watches",
                                 "the inotify watch limit is reached (ENOSPC)", 524288)
    if exc.errno == errno.EMFILE:
        return InotifyLimitError(path, "fs.inotify.max_user_instances",
                                 "the inotify instance limit is reached (EMFILE)", 1024)
    return None


def _inode(folder: Path) -> int | None:
    """The folder's inode, or None if it is not a folder now."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_ino if stat_mod.S_ISDIR(st.st_mode) else None


class StageWatcher:
    """Owns the watchdog observer: the root (not recursive) and each stage folder.

    Only the daemon's main thread calls `start`, `ensure_watches` and `stop`.
    """

    def __init__(self, root: Path, stages: Iterable[str], handler: StoryEventHandler) -> None:
        self.root = root
        self.stages = tuple(stages)
        self.handler = handler
        self.observer: BaseObserver = self._new_observer()
        self._watches: dict[str, tuple[ObservedWatch, int]] = {}
        self._root_watch: ObservedWatch | None = None
        # Stage folders that exist but are not watched, and why (unreadable, an
        # inotify limit); tried again at every ensure_watches (every 2 s).
        self.problems: dict[str, str] = {}

    def _new_observer(self) -> BaseObserver:
        try:
            return Observer()  # watchdog 7 opens its inotify instance here
        except OSError as exc:
            limit = inotify_limit_error(self.root, exc)
            if limit is None:
                raise
            raise limit from None

    def start(self) -> None:
        """Watch the root and the stage folders; InotifyLimitError if the kernel refuses."""
        try:
            self._root_watch = self.observer.schedule(self.handler, str(self.root),
                                                      recursive=False, event_filter=EVENT_KINDS)
            self.ensure_watches()
            self.observer.start()
        except OSError as exc:
            limit = inotify_limit_error(self.root, exc)
            if limit is None:
                raise
            raise limit from None

    def ensure_watches(self) -> bool:
        """(Re)watch each stage folder that exists; True if any watch changed.

        A folder deleted and made again may get its old inode back (ext4 reuses
        them): its watch is then told apart by its emitter, which stopped with
        the old folder.
        """
        changed = False
        running = ({e.watch for e in self.observer.emitters if e.is_alive()}
                   if self.observer.is_alive() else None)  # None: not started yet
        for stage in self.stages:
            folder = self.root / stage
            inode = _inode(folder)
            current = self._watches.get(stage)
            if current is not None and current[1] == inode and (
                    running is None or current[0] in running):
                continue
            if current is not None:
                self._unschedule(current[0])
                del self._watches[stage]
                changed = True
            if inode is None:
                self.problems.pop(stage, None)  # absent: the stat pass's business
                continue
            watch, why = self._schedule(folder)
            if watch is None:
                self._note_problem(stage, why)
                continue
            if self.problems.pop(stage, None) is not None:
                log.info("watch.stage_watched", stage=stage, action="a stat pass follows")
            self._watches[stage] = (watch, inode)
            changed = True
        return changed

    def _schedule(self, folder: Path) -> tuple[ObservedWatch | None, str]:
        """Watch one stage folder, or say why it cannot be watched.

        watchdog 7 ignores EACCES from inotify_add_watch and keeps a watch that
        never fires, so readability is checked first.
        """
        why = stage_problem(self.root, folder.name)
        if why is not None:
            return None, f"cannot be read ({why})"
        try:
            # A stage folder may be a symlink inside the root (a start refuses one out
            # of it, and `stage_problem` above one swapped in since): watch where it
            # leads. The events still name the folder's path under the root.
            return self.observer.schedule(self.handler, str(folder), recursive=False,
                                          event_filter=EVENT_KINDS, follow_symlink=True), ""
        except OSError as exc:
            limit = inotify_limit_error(folder, exc)
            return None, str(limit) if limit is not None else (exc.strerror or str(exc))

    def _note_problem(self, stage: str, why: str) -> None:
        problem = f"not watched: {why}"
        if self.problems.get(stage) != problem:  # logged once per new reason
            log.warning("watch.schedule_failed", stage=stage, error=why,
                        action="a stat pass finds its changes every few seconds; "
                               "watching it is retried every 2 s")
        self.problems[stage] = problem

    def _unschedule(self, watch: ObservedWatch) -> None:
        with contextlib.suppress(KeyError, OSError):
            self.observer.unschedule(watch)

    def is_alive(self) -> bool:
        """The observer thread and the root's emitter are running.

        A stage folder's emitter stops by itself when the folder is deleted or
        moved away (even when it is made again at once, with the same inode);
        that is `ensure_watches`' business, not a dead observer.
        """
        if not self.observer.is_alive():
            return False
        stage_watches = {watch for watch, _inode in self._watches.values()}
        return all(e.is_alive() for e in self.observer.emitters if e.watch not in stage_watches)

    def ensure_alive(self) -> bool:
        """Re-create a dead observer; True if it had died (a stat pass is then owed)."""
        if self.is_alive():
            return False
        log.error("watch.observer_died", action="re-created; a stat pass follows")
        self.restart()
        return True

    def restart(self) -> None:
        """Replace a dead observer with a fresh one watching the same folders."""
        with contextlib.suppress(Exception):
            self.observer.stop()
        self.observer = self._new_observer()
        self._watches.clear()
        self.start()

    def stop(self) -> None:
        if self.observer.ident is None:
            return  # never started: a restart that failed (its root gone meanwhile)
        self.observer.stop()
        self.observer.join(timeout=5)
