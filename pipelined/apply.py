"""The apply thread: the only owner of the pycrdt document and the content map.

It loads the pipeline state at startup (after READY when nothing changed),
reconciles each settled burst against the disk into one pycrdt transaction and
one Batch for the writer, confirms deletes after a quiet period, and compacts
the persisted history. Nothing else may touch its `Reconciler`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelined.config import Config
from pipelined.errors import PipelinedError
from pipelined.layout import (
    FileSignature,
    find_git_dir,
    split_rel_path,
    stage_problem,
    stat_signatures,
    symlinked_story_ids,
)
from pipelined.logs import get_logger
from pipelined.outcome import Outcome
from pipelined.policies import CompactionPolicy, DeletePolicy
from pipelined.shaping import reread_for_settings, stored_with_settings
from pipelined.store.connection import (
    as_corrupt,
    open_read_only,
)
from pipelined.store.load import Signatures, read_contents, read_signatures, read_state
from pipelined.store.writer import Writer, WriterStopped
from pipelined.watch import Coalescer, Settled

if TYPE_CHECKING:  # the sync, the story parser and batches load after READY, with the state
    from pipelined.sync import Reconciler, SyncResult

__all__ = ["ApplyLoop"]

log = get_logger("pipelined.apply")

DEFERRED_POLL_S = 0.05
BURST_LOG_MIN = 10  # bursts touching this many ids log their flush at info level
STARTUP_CHUNK = 1000  # ids per transaction when catching up at startup
SYMLINK_CHECK_S = 2.0  # symlinked stories' targets may live outside the watched folders
STAGE_PROBE_S = 2.0  # an unreadable stage folder is probed this often until it recovers


class StartupStopped(Exception):
    """A second SIGTERM/SIGINT stopped the startup catch-up: the chunks committed
    so far stay, and the next start re-reads only the files of the others."""


class _Timers:
    """When the apply loop last did each piece of its periodic work (monotonic s)."""

    def __init__(self, now: float) -> None:
        self.rescan = self.symlink_check = self.stage_probe = now


def _new_client_id() -> int:
    """A random pycrdt client id (32 bits, as Yjs uses), persisted for reuse."""
    return int.from_bytes(os.urandom(4), "big")


class ApplyLoop(threading.Thread):
    """Owns the pipeline state: loads it, reconciles settled bursts, hands batches on."""

    def __init__(self, config: Config, root: Path, db_path: Path,
                 coalescer: Coalescer, writer: Writer,
                 on_ready: Callable[[int], None] = lambda _stories: None,
                 outcome: Outcome | None = None) -> None:
        super().__init__(name="pipelined-apply", daemon=True)
        self.config = config
        self.root = root
        self.db_path = db_path
        self.coalescer = coalescer
        self.writer = writer
        self.ready = threading.Event()
        self.loaded = threading.Event()  # startup finished (state loaded), or failed
        self._on_ready = on_ready
        self.skip_flush = threading.Event()
        self.outcome = outcome or Outcome()  # where a failed start-up is reported
        self.stories = 0
        self.last_flush_monotonic = time.monotonic()
        self._deletes = DeletePolicy(config.delete_grace_ms / 1000, config.settle_cap_ms / 1000,
                                     config.git_lock_cap_s)
        self._reconciler: Reconciler | None = None
        self._compaction = CompactionPolicy(config.compact_updates)
        self._fresh_bytes_per_story: float | None = None
        self._other_contents_owed = False  # the catch-up loaded only the contents it needed
        # Stage folders that cannot be read, and why: replaced (never mutated) by this
        # thread, read by the main thread for `status` and STATUS=.
        self.stage_problems: dict[str, str] = {}

    # -- startup -------------------------------------------------------------------

    def _startup(self) -> Reconciler:
        """Rule 5: stat pass against the stored signatures, then load the state.

        The watcher is already running. When the stat pass finds nothing to
        re-read, the database already equals the folders, so READY is sent at
        once and the pipeline state and content map load right after, before
        the first flush. Otherwise the state loads first and the changes are
        committed before READY.
        """
        started = time.monotonic()
        conn = open_read_only(self.db_path)
        try:
            stored = read_signatures(conn)
            unlistable: dict[str, str] = {}
            seen = stat_signatures(self.root, self.config.stages, unlistable)
            if not unlistable and seen == stored.by_path:
                touched: set[str] = set()  # every known file there, unchanged
            else:
                from pipelined.sync import changed_story_ids

                known_ids = {split_rel_path(path)[1] for path in stored.by_path}
                touched = changed_story_ids(seen, stored.by_path, known_ids, unlistable)
            stat_ms = int((time.monotonic() - started) * 1000)
            stored_with = stored_with_settings(self.config.max_file_bytes)
            reread = (set() if stored.stored_with == stored_with
                      else reread_for_settings(stored.stored_with, stored_with, stored.by_path))
            touched |= reread
            in_sync_early = (not touched and stored.client_id is not None
                             and stored.stored_with == stored_with)
            if in_sync_early:
                self.stories = stored.story_count
                self._set_ready()
            self.writer.begin()  # its quick_check: after the stat pass
            reconciler, mismatch, applied = self._load_state(
                conn, stored, None if in_sync_early else touched)
        finally:
            conn.close()
        # Unreadable and symlinked files are looked at again whatever their signature.
        for stage, why in unlistable.items():
            reconciler.note_stage_problem(stage, why)
        totals = self._catch_up(reconciler, touched | reconciler.unreadable, mismatch | reread,
                                new_client=stored.client_id is None,
                                stored_with=None if stored.stored_with == stored_with
                                else stored_with)
        if reread:
            log.info("startup.settings_changed", reread=len(reread), now=stored_with,
                     before=stored.stored_with)
        self.stories = len(reconciler.state)
        log.info("daemon.startup", stories_loaded=stored.story_count, crdt_updates=applied,
                 files_stat_checked=len(seen), files_reread=totals.files_read,
                 created=totals.created, updated=totals.updated, moved=totals.moved,
                 deleted=totals.deleted, ready_before_load=in_sync_early, stat_ms=stat_ms,
                 ms=int((time.monotonic() - started) * 1000))
        return reconciler

    def _catch_up(self, reconciler: Reconciler, touched: set[str], mismatch: set[str],
                  *, new_client: bool, stored_with: str | None = None) -> SyncResult:
        """Reconcile what changed while the daemon was stopped; wait until it is committed.

        In chunks of STARTUP_CHUNK ids, each its own pycrdt transaction and batch
        (update, rows and signatures together, as for a burst), so the writer
        commits one chunk while this thread parses the next: a first import
        takes the longer of the two instead of their sum. A crash in between
        leaves the rest without signatures, and the next start reads only those.
        `stored_with` (the settings the rows are now made with) is recorded with
        the first chunk, or with the last when rows are to be rewritten
        (`mismatch`: stale under changed settings, or disagreeing with the
        state): a crash before it then leaves the old value, and the next start
        re-reads again what the change affects.
        """
        from pipelined.store.batch import Batch
        from pipelined.sync import SyncResult, logs_each_story

        confirm_absent = not self._git_busy()
        ids = sorted(touched | mismatch)
        log_each = logs_each_story(len(ids) + len(reconciler.symlinked))  # the whole catch-up
        totals = SyncResult(Batch())
        seq = None
        last_begin = max(0, len(ids) - 1) // STARTUP_CHUNK * STARTUP_CHUNK
        for begin in range(0, max(1, len(ids)), STARTUP_CHUNK):
            chunk = ids[begin:begin + STARTUP_CHUNK]
            result = reconciler.reconcile(chunk, confirm_absent=confirm_absent,
                                          repair=mismatch.intersection(chunk),
                                          log_each=log_each)
            if new_client and begin == 0:
                result.batch.meta["client_id"] = str(reconciler.state.doc.client_id)
            self._defer(result)
            totals.add_counts(result)
            if (stored_with is not None and begin == (last_begin if mismatch else 0)
                    and not totals.skipped & mismatch):
                # Not while a story to re-read sits in a folder that cannot be read:
                # the next start re-reads what the new settings affect again.
                result.batch.meta["stored_with"] = stored_with
            try:
                seq = self.writer.submit(result.batch)
            except WriterStopped:
                raise self._writer_stopped() from None
        if seq is not None and not self.writer.wait_committed(seq):
            raise self._writer_stopped()
        return totals

    def _writer_stopped(self) -> BaseException:
        """Why the catch-up cannot go on: a second signal abandoned the writer (not a
        failure), the writer's own error (a corrupt database: one line), or else a
        plain one."""
        if self.skip_flush.is_set():
            return StartupStopped()
        first = self.writer.first_error
        if isinstance(first, PipelinedError):
            return first
        return RuntimeError("the writer stopped before the startup changes were committed")

    def _set_ready(self) -> None:
        # Sent from this thread: the state load that follows holds the GIL for
        # long stretches (pycrdt), which would delay a hand-off to the main thread.
        if not self.ready.is_set():
            self._on_ready(self.stories)
            self.ready.set()

    def _load_state(self, conn: Any, stored: Signatures,
                    touched: set[str] | None) -> tuple[Reconciler, set[str], int]:
        """The pycrdt document, the content map and the known files, from the database.

        With `touched` (files changed while stopped: READY waits for this load)
        the content map holds only what the catch-up reconciles; the rest is
        read after READY (`_load_other_contents`), before the first flush: a
        large catalogue's contents are not read before READY.
        """
        from pipelined.content import ContentMap
        from pipelined.state import PipelineState  # pycrdt: loaded only with the state
        from pipelined.sync import KnownFile, Reconciler

        full = read_state(conn)
        client_id = stored.client_id if stored.client_id is not None else _new_client_id()
        state = PipelineState(client_id)
        applied = state.load(full.updates)
        self._compaction = CompactionPolicy(self.config.compact_updates,
                                            sum(len(u) for u in full.updates), applied)
        known = [KnownFile(sid, stage, FileSignature(mtime, size, inode), bool(winner))
                 for _path, sid, stage, mtime, size, inode, winner in full.signatures]
        mismatch = state.ids() ^ full.row_ids
        if mismatch:
            log.warning("startup.state_rows_disagree", ids=sorted(mismatch)[:20],
                        count=len(mismatch))
        symlinked = symlinked_story_ids(self.root, self.config.stages)
        # Every id the catch-up reconciles (see reconcile(): symlinked ones too).
        first = None if touched is None else touched | full.unreadable | mismatch | symlinked
        content = ContentMap(read_contents(conn, first))
        # A first import owes nothing: every row is one the catch-up writes.
        self._other_contents_owed = first is not None and bool(full.row_ids - first)
        reconciler = Reconciler(self.root, self.config.stages, state, content, known,
                                self.config.max_file_bytes, stored.high_water,
                                unreadable=full.unreadable, symlinked=symlinked)
        return reconciler, mismatch, applied

    def _load_other_contents(self) -> None:
        """After a catch-up: the contents it did not need, as committed (its own rows
        are already in the map and are not overwritten)."""
        assert self._reconciler is not None
        content = self._reconciler.content
        conn = open_read_only(self.db_path)
        try:
            for story_id, text in read_contents(conn):
                if not content.has(story_id):
                    content.set_content(story_id, text)
        finally:
            conn.close()
        self._other_contents_owed = False

    # -- the loop ------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._reconciler = self._startup()
            self._set_ready()
            if self._other_contents_owed:
                self._load_other_contents()
        except StartupStopped:  # a second signal: no failure, the next start goes on
            log.warning("daemon.startup_stopped",
                        action="the next start re-reads what was not committed")
            return
        except BaseException as exc:  # reported by the main thread
            self.outcome.fail(exc := as_corrupt(self.db_path, exc))
            if not isinstance(exc, PipelinedError):
                log.exception("apply.startup_failed")
            return
        finally:
            self.loaded.set()
        timers = _Timers(time.monotonic())
        while True:
            self.stage_problems = dict(self._reconciler.stage_problems)  # for the main thread
            timeout = DEFERRED_POLL_S if self._deletes else 1.0
            settled = self.coalescer.take(timeout)
            if settled.stopping and self.skip_flush.is_set():
                return
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
        due, past_git_lock_s = self._deletes.due(self.coalescer.quiet_for(), self._git_busy)
        if not due:
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
            self._fresh_bytes_per_story = len(state.fresh_snapshot(_new_client_id())) / stories
        fresh_estimate = self._fresh_bytes_per_story * stories
        compaction = Compaction(snapshot)
        if len(snapshot) > 2 * fresh_estimate:
            client_id = _new_client_id()
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

    def _git_busy(self) -> bool:
        # Looked up each time (a few stats, only when a delete is pending): the
        # root may become a git checkout while the daemon runs.
        git_dir = find_git_dir(self.root)
        return git_dir is not None and (git_dir / "index.lock").exists()


