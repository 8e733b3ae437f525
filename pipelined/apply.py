"""The apply thread: the only owner of the pycrdt document and the content map.

It runs the start-up (`pipelined.startup`: load, catch-up, READY as soon as
the database equals the folders), then reconciles each settled burst against
the disk into one pycrdt transaction and one Batch for the writer, confirms
deletes after a quiet period, and compacts the persisted history. Nothing else
may touch its `Reconciler`. What it tells the main thread goes through two
futures (`in_sync`, `loaded`) and the run's `Outcome`; what it publishes for
status (`stories`, `stage_problems`, `last_flush_monotonic`) is replaced, never
mutated.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from pipelined.config import Config
from pipelined.errors import PipelinedError
from pipelined.layout import git_busy, stage_problem
from pipelined.logs import get_logger
from pipelined.outcome import Outcome
from pipelined.policies import CompactionPolicy, DeletePolicy
from pipelined.startup import Startup, StartupStopped, new_client_id
from pipelined.store.connection import as_corrupt
from pipelined.store.writer import Writer, WriterStopped
from pipelined.survey import Survey
from pipelined.watch import Coalescer, Settled

if TYPE_CHECKING:  # the sync, the story parser and batches load after READY, with the state
    from pipelined.sync import Reconciler, SyncResult

__all__ = ["ApplyLoop"]

log = get_logger("pipelined.apply")

DEFERRED_POLL_S = 0.05
BURST_LOG_MIN = 10  # bursts touching this many ids log their flush at info level
SYMLINK_CHECK_S = 2.0  # symlinked stories' targets may live outside the watched folders
STAGE_PROBE_S = 2.0  # an unreadable stage folder is probed this often until it recovers
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TRIM_AFTER_IDS = 1000  # a burst this big frees enough heap to give back (_trim_heap)


class _Timers:
    """When the apply loop last did each piece of its periodic work (monotonic s)."""

    def __init__(self, now: float) -> None:
        self.rescan = self.symlink_check = self.stage_probe = now


class ApplyLoop(threading.Thread):
    """Owns the pipeline state: loads it, reconciles settled bursts, hands batches on."""

    def __init__(self, config: Config, root: Path, db_path: Path,
                 coalescer: Coalescer, writer: Writer,
                 notify_in_sync: Callable[[int], None] = lambda _stories: None,
                 outcome: Outcome | None = None, survey: Survey | None = None,
                 paths_ok: Callable[[], bool] = lambda: True) -> None:
        super().__init__(name="pipelined-apply", daemon=True)
        # The root (and database) paths still name what the daemon started on: the
        # main thread stops the run when they do not, and no delete is confirmed then.
        self._paths_ok = paths_ok
        self._survey = survey  # handed to the start-up, which frees it
        self.config = config
        self.root = root
        self.db_path = db_path
        self.coalescer = coalescer
        self.writer = writer
        self._notify_in_sync = notify_in_sync
        # When (monotonic) the database first equalled the folders: READY was sent.
        self.in_sync: Future[float] = Future()
        # The start-up is over (the state is loaded and the loop runs, or it failed
        # or was stopped: see `outcome`).
        self.loaded: Future[None] = Future()
        self.outcome = outcome or Outcome()  # where a failed start-up is reported
        self.stories = 0
        self.last_flush_monotonic = time.monotonic()
        # Stage folders that cannot be read, and why: replaced (never mutated) by this
        # thread, read by the main thread for `status` and STATUS=.
        self.stage_problems: dict[str, str] = {}
        self._deletes = DeletePolicy(config.delete_grace_ms / 1000, config.settle_cap_ms / 1000,
                                     config.git_lock_cap_s)
        self._compaction = CompactionPolicy(config.compact_updates)
        self._reconciler: Reconciler | None = None
        self._fresh_bytes_per_story: float | None = None
        # The start-up, or a big burst, freed much of the C heap: given back to the
        # kernel once the writer has committed it all (see _trim_heap).
        self._trim_due = True

    def _in_sync(self, stories: int) -> None:
        # READY is sent from this thread: the state load that follows holds the GIL
        # for long stretches (pycrdt), which would delay a hand-off to the main thread.
        self.stories = stories
        self._notify_in_sync(stories)
        self.in_sync.set_result(time.monotonic())

    def _start(self) -> bool:
        """The start-up; False when it failed (reported to the Outcome) or was stopped."""
        survey, self._survey = self._survey, None
        startup = Startup(self.config, self.root, self.db_path, self.writer, self._in_sync,
                          survey=survey, paths_ok=self._paths_ok)
        del survey
        try:
            started = startup.run()
            self._reconciler = started.reconciler
            self._compaction = started.compaction
            self._deletes.defer(started.deferred)
            self.stories = len(started.reconciler.state)
            return True
        except StartupStopped:  # a second signal: no failure, the next start goes on
            log.warning("daemon.startup_stopped",
                        action="the next start re-reads what was not committed")
            return False
        except BaseException as exc:  # reported by the main thread
            self.outcome.fail(exc := as_corrupt(self.db_path, exc))
            if not isinstance(exc, PipelinedError):
                log.exception("apply.startup_failed")
            return False
        finally:
            self.loaded.set_result(None)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        if not self._start():
            return
        assert self._reconciler is not None
        try:
            self._loop()
        finally:
            self._reconciler.content.close()

    def _loop(self) -> None:
        assert self._reconciler is not None
        timers = _Timers(time.monotonic())
        while True:
            self.stage_problems = dict(self._reconciler.stage_problems)  # for the main thread
            timeout = DEFERRED_POLL_S if self._deletes else 1.0
            settled = self.coalescer.take(timeout)
            if settled.hurried:
                return
            self._reconciler.content.forget_committed()
            if self._trim_due and not settled.story_ids and self.writer.pending() == 0 \
                    and self.writer.committed >= self.writer.submitted:
                self._trim_due = False
                _trim_heap()
            self._add_periodic_work(settled, timers)
            if not self._flush_settled(settled.story_ids, settled.rescan, settled.stopping):
                return
            if settled.stopping:
                return

    def _add_periodic_work(self, settled: Settled, timers: _Timers) -> None:
        """The safety-net stat pass, symlinked stories' targets, unreadable folders."""
        assert self._reconciler is not None
        now = time.monotonic()
        if now - timers.rescan >= self.config.rescan_interval_s:
            settled.rescan = True
        if self._reconciler.stage_problems and now - timers.stage_probe >= STAGE_PROBE_S:
            timers.stage_probe = now
            settled.rescan |= self._stages_recovered()
        if self._reconciler.symlinked and now - timers.symlink_check >= SYMLINK_CHECK_S:
            timers.symlink_check = now
            settled.story_ids |= self._reconciler.symlinked
        if settled.rescan:
            timers.rescan = now

    def _stages_recovered(self) -> bool:
        """Probe the stage folders that could not be read; True if one can be now (a
        stat pass then catches up on what changed there meanwhile)."""
        assert self._reconciler is not None
        problems = self._reconciler.stage_problems
        recovered = [stage for stage in list(problems) if stage_problem(self.root, stage) is None]
        for stage in recovered:
            del problems[stage]
            log.info("sync.stage_readable", stage=stage, action="a stat pass follows")
        return bool(recovered)

    def _flush_settled(self, story_ids: set[str], rescan: bool, stopping: bool) -> bool:
        """One settled burst; False once nothing more can be committed."""
        try:
            story_ids = self._with_rescan(story_ids, rescan)
            self._flush(story_ids)
            self._confirm_deletes(final=stopping)
        except BaseException as exc:  # pycrdt panics are BaseExceptions
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            if isinstance(exc, WriterStopped):
                log.error("apply.writer_stopped", error=str(exc))
                return False
            # One bad story must not stop the others: retry them one by one.
            log.exception("apply.flush_failed", stories=len(story_ids))
            self._flush_each(story_ids)
        return True

    def _with_rescan(self, story_ids: set[str], rescan: bool) -> set[str]:
        if not rescan:
            return story_ids
        assert self._reconciler is not None
        changed, checked = self._reconciler.changed_ids()
        # At info only when it found something: a folder that cannot be watched
        # gets a stat pass every few seconds, which must not flood the journal.
        (log.info if changed else log.debug)("sync.rescan", files_stat_checked=checked,
                                             changed=len(changed))
        return story_ids | changed

    def _flush_each(self, story_ids: set[str]) -> None:
        """Reconcile ids one at a time; an id that still fails is logged and skipped."""
        for story_id in sorted(story_ids):
            try:
                self._flush({story_id})
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                log.exception("sync.story_failed", id=story_id)

    def _flush(self, story_ids: set[str]) -> None:
        reconciler = self._reconciler
        assert reconciler is not None
        if not story_ids:
            return
        started = time.monotonic()
        result = reconciler.reconcile(story_ids, confirm_absent=False)
        self._deletes.forget(story_ids - result.absent)
        self._defer(result)
        self._submit(result, started, len(story_ids))

    def _confirm_deletes(self, *, final: bool) -> None:
        """Delete vanished stories once they stayed absent through a quiet period."""
        if not self._deletes or final:
            return
        due, past_git_lock_s = self._deletes.due(self.coalescer.quiet_for(),
                                                     lambda: git_busy(self.root))
        if not due or not self._paths_ok():  # a root replaced: the daemon stops on it
            return
        if past_git_lock_s:
            log.warning("sync.git_lock_cap", waited_s=round(past_git_lock_s, 1))
        assert self._reconciler is not None
        started = time.monotonic()
        result = self._reconciler.reconcile(due, confirm_absent=True)
        self._deletes.forget(due)
        self._submit(result, started, len(due))

    def _defer(self, result: SyncResult) -> None:
        self._deletes.defer(result.absent)

    def _submit(self, result: SyncResult, started: float, touched: int) -> None:
        assert self._reconciler is not None
        self.writer.submit(result.batch)
        self._trim_due |= touched >= TRIM_AFTER_IDS
        if result.batch.crdt_update and self._compaction.add(len(result.batch.crdt_update)):
            self._compact()
        self.stories = len(self._reconciler.state)
        self.last_flush_monotonic = time.monotonic()
        if result.batch.upserts or result.batch.deletes:
            # One line per burst; single edits already log their story.* line.
            emit = log.info if touched >= BURST_LOG_MIN else log.debug
            emit("sync.flushed", touched=touched, read=result.files_read,
                 rows=len(result.batch.upserts), deletes=len(result.batch.deletes),
                 ms=int((time.monotonic() - started) * 1000))

    def _compact(self) -> None:
        """Squash the persisted history into one snapshot, queued behind the updates
        it covers; the writer deletes them in the same transaction. When even the
        snapshot has grown past twice a fresh encoding, rebase: a new document
        (a new epoch) holding only the current state."""
        from pipelined.store.batch import Batch, Compaction

        assert self._reconciler is not None
        state = self._reconciler.state
        started = time.monotonic()
        snapshot = state.snapshot()
        stories = max(1, len(state))
        if self._fresh_bytes_per_story is None:
            self._fresh_bytes_per_story = len(state.fresh_snapshot(new_client_id())) / stories
        fresh_estimate = self._fresh_bytes_per_story * stories
        compaction = Compaction(snapshot)
        if len(snapshot) > 2 * fresh_estimate:
            client_id = new_client_id()
            snapshot = state.rebase(client_id)
            self._fresh_bytes_per_story = len(snapshot) / stories
            compaction = Compaction(snapshot, new_epoch=True, client_id=client_id,
                                    reason=f"snapshot {len(compaction.snapshot)} bytes > "
                                           f"2 x fresh {int(fresh_estimate)}")
        self.writer.submit(Batch(compaction=compaction))
        log.info("crdt.compacted", updates=self._compaction.updates,
                 replaced_bytes=self._compaction.bytes, snapshot_bytes=len(snapshot),
                 rebased=compaction.new_epoch, ms=int((time.monotonic() - started) * 1000))
        self._compaction.compacted(len(snapshot))


def _trim_heap() -> None:
    """Give the C heap's free pages back to the kernel (glibc's `malloc_trim`).

    A first import or a big checkout allocates and frees hundreds of megabytes
    (texts, rows, SQLite's pages) among objects that stay; glibc keeps the freed
    pages, so the daemon's RSS stayed at its peak (10,000 stories: 88 MiB after
    a first import, 79 after this; 75 after a restart). Without glibc (musl),
    nothing to do.
    """
    import ctypes  # already loaded by watchdog's inotify

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    before, started = _rss_mib(), time.monotonic()
    trim(0)
    log.info("daemon.heap_trimmed", rss_mib_before=before, rss_mib=_rss_mib(),
             ms=int((time.monotonic() - started) * 1000))


def _rss_mib(statm_path: str = "/proc/self/statm") -> int | None:
    """The daemon's resident memory, or None where /proc cannot tell."""
    try:
        with open(statm_path, "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES // 2**20
    except (OSError, ValueError, IndexError):
        return None
