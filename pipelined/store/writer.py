"""The writer thread: the only code that writes the database.

Only the writer thread touches its connection. Batches arrive in order on a
bounded queue (a full queue blocks the submitter: back-pressure); everything
waiting is committed in one transaction, so a burst's pycrdt update, its rows
and its file signatures land together or not at all. A failed commit is
rolled back and retried with exponential back-off; no batch is ever dropped.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import apsw

from pipelined.errors import CommitFailed, DatabaseCorrupt
from pipelined.logs import get_logger
from pipelined.outcome import Outcome
from pipelined.schema import FIELDS, errors_to_column, to_column
from pipelined.store.connection import as_corrupt, transaction
from pipelined.store.integrity import (
    STOPPED_CLEAN,
    IntegrityCheck,
    mark_clean_stop,
    stopped_clean,
    unmark,
)
from pipelined.store.search_build import SEARCH_CURSOR, merge_search_slice, search_step

if TYPE_CHECKING:  # batches come only after READY on an unchanged restart
    from pipelined.store.batch import Batch, Compaction

__all__ = ["Writer", "WriterStopped", "utc_now"]

log = get_logger("pipelined.writer")

MAX_GROUP = 256  # batches folded into one transaction at most
BIG_GROUP_ROWS = 1000  # a commit this large is checkpointed at once
REOPEN_EVERY = 3  # consecutive failures before the connection is opened again
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
ERROR_LOG_EVERY_S = 30.0
SUBMIT_POLL_S = 0.2  # a submit blocked on a full queue checks this often that the writer runs

# The story fields' columns come from the schema; created_at is set once.
UPSERT_ITEM = f"""
INSERT INTO pipeline_items(id, stage, {", ".join(FIELDS)}, content, created_at, updated_at)
VALUES (:id, :stage, {", ".join(":" + name for name in FIELDS)}, :content, :now, :now)
ON CONFLICT(id) DO UPDATE SET
  stage=excluded.stage, {", ".join(f"{name}=excluded.{name}" for name in FIELDS)},
  content=excluded.content, updated_at=excluded.updated_at
"""

UPSERT_EXTRA = """
INSERT INTO story_extras(id, extra, errors, unreadable) VALUES (?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET extra=excluded.extra, errors=excluded.errors,
  unreadable=excluded.unreadable
"""

UPSERT_SIGNATURE = """
INSERT INTO file_signatures(path, story_id, stage, mtime_ns, size, inode, winner)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(path) DO UPDATE SET story_id=excluded.story_id, stage=excluded.stage,
  mtime_ns=excluded.mtime_ns, size=excluded.size, inode=excluded.inode,
  winner=excluded.winner
"""


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T09:13:01.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_batches(conn: apsw.Connection, batches: list[Batch], *, unmark: bool = False) -> None:
    """Commit batches in order in one transaction (rolled back whole on error);
    `unmark` also clears the clean-stop mark (the first commit of a run)."""
    now = utc_now()
    with transaction(conn):
        if unmark:  # the mark of a clean stop: this run writes (store.integrity)
            conn.execute("DELETE FROM daemon_meta WHERE key = ?", (STOPPED_CLEAN,))
        for batch in batches:
            search_step(conn, batch.search_index, before_rows=True)
            if batch.crdt_update:
                conn.execute(
                    "INSERT INTO crdt_updates(data, committed_at, epoch) VALUES "
                    "(?, ?, (SELECT coalesce(max(epoch), 1) FROM crdt_epochs))",
                    (batch.crdt_update, now),
                )
            kinds = [(row.story_id, row.stage_kind) for row in batch.upserts if row.stage_kind]
            conn.executemany("INSERT OR REPLACE INTO stage_change_kind VALUES (?, ?)", kinds)
            for row in batch.upserts:
                params: dict[str, Any] = {"id": row.story_id, "stage": row.stage,
                                          "content": row.content, "now": now}
                params.update({name: to_column(name, value)
                               for name, value in row.fields.items()})
                conn.execute(UPSERT_ITEM, params)
                conn.execute(UPSERT_EXTRA, (
                    row.story_id, json.dumps(row.extra, ensure_ascii=False),
                    errors_to_column(row.errors),
                    int(row.unreadable),
                ))
            if kinds:  # read by the history trigger of these upserts only
                conn.execute("DELETE FROM stage_change_kind")
            conn.executemany(
                "INSERT INTO story_history(at, story_id, kind, from_stage, to_stage) "
                "VALUES (?, ?, 'moved', ?, ?)", [(now, *move) for move in batch.moves])
            for story_id in batch.deletes:
                conn.execute("DELETE FROM story_extras WHERE id = ?", (story_id,))
                conn.execute("DELETE FROM pipeline_items WHERE id = ?", (story_id,))
            for path in batch.signature_drops:
                conn.execute("DELETE FROM file_signatures WHERE path = ?", (path,))
            for sig in batch.signatures:
                conn.execute(UPSERT_SIGNATURE, (sig.path, sig.story_id, sig.stage,
                                                sig.mtime_ns, sig.size, sig.inode,
                                                int(sig.winner)))
            if batch.high_water is not None:
                conn.execute(
                    "UPDATE story_numbers SET high_water = max(high_water, ?) WHERE singleton = 1",
                    (batch.high_water,),
                )
            for key, value in batch.meta.items():
                conn.execute("INSERT OR REPLACE INTO daemon_meta(key, value) VALUES (?, ?)",
                             (key, value))
            if batch.compaction is not None:
                _write_compaction(conn, batch.compaction, now)
            search_step(conn, batch.search_index, before_rows=False)
        if any(batch.search_index != "slice" for batch in batches):  # a slice syncs nothing
            conn.execute("INSERT OR REPLACE INTO daemon_meta(key, value) "
                         "VALUES ('last_sync', ?)", (now,))


def _write_compaction(conn: apsw.Connection, compaction: Compaction, now: str) -> None:
    """The snapshot replaces every update before it, in the caller's transaction."""
    row = conn.execute("SELECT coalesce(max(epoch), 1) FROM crdt_epochs").fetchone()
    epoch = int(row[0]) if row else 1
    if compaction.new_epoch:
        epoch += 1
        conn.execute("INSERT INTO crdt_epochs(epoch, client_id, started_at, reason) "
                     "VALUES (?, ?, ?, ?)", (epoch, compaction.client_id, now, compaction.reason))
        conn.execute("INSERT OR REPLACE INTO daemon_meta(key, value) VALUES ('client_id', ?)",
                     (str(compaction.client_id),))
    conn.execute("INSERT INTO crdt_updates(data, committed_at, kind, epoch) "
                 "VALUES (?, ?, 'snapshot', ?)", (compaction.snapshot, now, epoch))
    conn.execute("DELETE FROM crdt_updates WHERE seq < last_insert_rowid()")


# Errors a retry can outlive: another program's lock, a full disk, an I/O error,
# a file that cannot be opened or written for now. Anything else stops the writer.
TRANSIENT = (apsw.BusyError, apsw.LockedError, apsw.FullError, apsw.IOError,
             apsw.CantOpenError, apsw.ReadOnlyError, apsw.ProtocolError, apsw.NoMemError)


def _passes_by_itself(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


class WriterStopped(RuntimeError):
    """A batch could not be queued: the writer stopped (`cause`: its first error)."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(f"the writer stopped ({cause or 'abandoned'}); the batch was not queued")
        self.cause = cause


class Writer(threading.Thread):
    """Owns the write connection; commits submitted batches in order."""

    def __init__(
        self,
        connect: Callable[[], apsw.Connection],
        queue_size: int,
        sleep: Callable[[float], None] = time.sleep,
        check: Callable[[apsw.Connection], None] | None = None,
        path: Path | None = None,
        outcome: Outcome | None = None,
        open_reader: Callable[[], apsw.Connection] | None = None,
    ) -> None:
        super().__init__(name="pipelined-writer", daemon=True)
        self._connect = connect
        # `open_reader`: a read-only connection for the check beside the first writes,
        # after a clean stop; without one the check always comes before them.
        self._integrity = (IntegrityCheck(check, open_reader, self._damage_found)
                           if check is not None else None)
        self._check_failed = threading.Event()  # the check beside the writes found damage
        self._marked = False  # the clean-stop mark is in the file: the first commit clears it
        self._fold_unmark = False  # that commit is not checkpointed yet (the check reads)
        self._stop_lock = threading.Lock()
        self._stop_reported = False
        self._path = path  # for DatabaseCorrupt's message
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._sleep = sleep
        self._conn: apsw.Connection | None = None
        self._abandon = threading.Event()
        self._closing = threading.Event()
        self._begun = threading.Event()
        # Set once the connection is open: from then on this process holds the
        # database (and its -wal, which SQLite deletes only with the last one).
        self.connected = threading.Event()
        # Rows were indexed since the search index's segments were last merged: the
        # writer merges them in slices while its queue is empty (migration 0009).
        self.merging_search = False
        self.commits = 0
        self.attempts = 0  # commit attempts finished, failed ones included
        self.last_commit_monotonic = time.monotonic()
        self.failing_since: float | None = None
        self.last_error: str | None = None
        # Why it stopped (also reported to `outcome`, the run's): a failed open or
        # check, or an error that retrying cannot fix; while it retries, the first
        # error of the streak.
        self.first_error: BaseException | None = None
        self.outcome = outcome or Outcome()
        self._seq_cond = threading.Condition()
        self._submitted = 0
        self._committed = 0

    # -- called from other threads -------------------------------------------------

    def begin(self) -> None:
        """Run the integrity check now.

        The thread opens its connection at once but waits for this (or a batch,
        or close) before the check, which reads the whole database file and
        slowed the startup stat pass running beside it by a few percent: the
        apply thread calls it once that pass is done.
        """
        self._begun.set()

    def submit(self, batch: Batch) -> int:
        """Queue a batch; blocks while the queue is full (back-pressure).

        Returns a sequence number for `wait_committed`. Only one thread submits.
        Raises WriterStopped when the queue is full and the writer has stopped
        or been abandoned: nothing would ever take the batch.
        """
        if batch.is_empty():
            return self._submitted
        self._begun.set()
        with self._seq_cond:
            self._submitted += 1
            seq = self._submitted
        while True:
            try:
                self._queue.put((seq, batch), timeout=SUBMIT_POLL_S)
                return seq
            except queue.Full:
                # A writer that stopped (a failed check, a second SIGTERM) never
                # frees a slot: waiting on would hang the submitter for good.
                if self._stopping() or not self.is_alive():
                    raise WriterStopped(self.first_error) from None

    def wait_committed(self, seq: int, timeout: float | None = None) -> bool:
        """Block until batch `seq` (and all before it) is committed.

        False on timeout, or once the writer has stopped, been abandoned or found
        damage (nothing would ever wake the waiter).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._seq_cond:
            while self._committed < seq:
                if self._stopping() or not self.is_alive():
                    return False
                remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._seq_cond.wait(remaining)
            return True

    @property
    def submitted(self) -> int:
        return self._submitted

    @property
    def committed(self) -> int:
        """The sequence number of the last batch committed (0: none yet)."""
        return self._committed

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float | None = None) -> None:
        """Commit everything queued, checkpoint, close the connection, stop.

        Never blocks on a full queue; `timeout=0` only asks the thread to stop.
        """
        self._closing.set()
        self._begun.set()
        if timeout != 0:
            self.join(timeout)

    def abandon(self) -> None:
        """Stop retrying (a second SIGTERM): what is not committed stays uncommitted."""
        self._abandon.set()
        self._closing.set()
        self._begun.set()
        with self._seq_cond:
            self._seq_cond.notify_all()

    @property
    def abandoned(self) -> bool:
        return self._abandon.is_set()

    # -- the writer thread ---------------------------------------------------------

    def _stopped_by(self, error: BaseException) -> None:
        """Report why the writer stops; the first report stands (the check beside the
        writes and the writer thread may both have one)."""
        with self._stop_lock:
            if self._stop_reported:
                return
            self._stop_reported = True
            self.first_error = error
        self.outcome.fail(error)

    def run(self) -> None:
        try:
            self._conn = self._connect()
            self.connected.set()
            self._marked = stopped_clean(self._conn)
            self._begun.wait()
            if self._integrity is not None:
                self._integrity.start(self._conn, beside=self._marked)
        except Exception as exc:
            self._stopped_by(exc)
            log.error("writer.open_failed", error=str(exc))
            if self._conn is not None:
                self._end()
            return
        try:
            if self._serve() and not self._stopping():
                self._stop_cleanly()
        finally:
            if self._integrity is not None:
                self._integrity.interrupt()
            self._end()

    def _stop_cleanly(self) -> None:
        """Everything is committed: let a check still running beside the writes finish
        (so that the next start need not check first; a second signal ends the wait),
        mark a clean stop if the file passed it, checkpoint."""
        assert self._conn is not None
        if self._integrity is not None:
            self._integrity.finish(self._stopping)
            if self._check_failed.is_set():
                return
            if self._integrity.passed.is_set():
                mark_clean_stop(self._conn, utc_now())
        self._checkpoint()

    def _end(self) -> None:
        """Close the connection; first, when this run found damage before any commit,
        take the mark away (nothing else it stops on says the file changed)."""
        assert self._conn is not None
        if (self._marked and isinstance(self.first_error, DatabaseCorrupt)
                and not self._abandon.is_set()):
            unmark(self._conn)
        self._conn.close()

    def _stopping(self) -> bool:
        """Abandoned (a second signal), or the check beside the writes found damage."""
        return self._abandon.is_set() or self._check_failed.is_set()

    def _damage_found(self, error: BaseException) -> None:
        """The check beside the writes failed (its thread): the writer stops as after a
        failed check before them."""
        self._stopped_by(error)
        log.error("writer.check_failed", error=str(error))
        self._check_failed.set()
        with self._seq_cond:
            self._seq_cond.notify_all()

    def _checking(self) -> bool:
        return self._integrity is not None and self._integrity.reading

    def _serve(self) -> bool:
        """Commit what is queued until closing (True) or a commit fails, the writer is
        abandoned or its check found damage (False); between batches, the slices of a
        search index build, then of the index's merging (`_tidy`)."""
        building = False  # a search index build in slices is under way
        while not self._stopping():
            try:
                first = (self._queue.get_nowait() if building or self.merging_search
                         else self._queue.get(timeout=0.1))
            except queue.Empty:
                if not self._tidy(building):
                    return False
                if self._closing.is_set():
                    return True  # closing, and everything queued is committed
                if building:  # nothing waits: the next slice of the index
                    if not self._commit([_slice_batch()]):
                        return False
                    building = self._search_building()
                    self.merging_search = True  # each slice adds segments
                continue
            group: list[tuple[int, Batch]] = [first]
            while len(group) < MAX_GROUP:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._commit([batch for _, batch in group]):
                return False
            if any(batch.upserts or batch.deletes for _, batch in group):
                self.merging_search = True  # before waiters wake: they may ask (tests do)
            with self._seq_cond:
                self._committed = group[-1][0]
                self._seq_cond.notify_all()
            if sum(len(batch.upserts) for _, batch in group) >= BIG_GROUP_ROWS:
                self._checkpoint()  # fold a big import into the database file now
            if any(batch.search_index == "resume" for _, batch in group):
                building = self._search_building()
        return False  # stopping: abandoned, or the check found damage

    def _search_building(self) -> bool:
        """Whether a search index build is under way. A read that fails says yes: the
        next slice goes through `_commit`'s retries, and a slice with no build to go
        on with is a no-op."""
        assert self._conn is not None
        try:
            return self._conn.execute("SELECT 1 FROM daemon_meta WHERE key = ?",
                                      (SEARCH_CURSOR,)).fetchone() is not None
        except apsw.Error as exc:
            log.warning("writer.search_build_unknown", error=f"{type(exc).__name__}: {exc}")
            return True

    def _tidy(self, building: bool) -> bool:
        """Nothing waits: what is not syncing. The checkpoint of the mark's deletion once
        the check no longer reads; a slice of the search index's merging, unless a
        build of the index goes on (its slices first) or the writer is closing.
        False when the writer must stop (a merge found damage)."""
        if self._fold_unmark and not self._checking():
            self._fold_unmark = False  # the check's read no longer holds it back
            self._checkpoint(passive=True)
        if self.merging_search and not building and not self._closing.is_set():
            try:  # cleared only once the slice is done: a reader may be waiting for it
                self.merging_search = self._merge_search_slice()
            except _StopWriting:
                self.merging_search = False
                return False
        return True

    def _merge_search_slice(self) -> bool:
        """One slice of merging the search index's segments, in a transaction of its own,
        while nothing waits; True while more remains. Merging is tidying, not syncing:
        a slice that fails as a commit could retry (busy, full, I/O) is one warning and
        is not retried until the next commit of rows asks again; damage, or any other
        error, stops the writer as a failed commit does (_StopWriting). Only a commit
        of rows asks for it, and that commit cleared the clean-stop mark already."""
        assert self._conn is not None
        try:
            with transaction(self._conn):
                return merge_search_slice(self._conn)
        except Exception as exc:
            if not _passes_by_itself(exc):
                self._fail_for_good(exc, batches=0)
                raise _StopWriting from exc
            log.warning("writer.search_merge_failed", error=f"{type(exc).__name__}: {exc}",
                        action="merged after the next commit of rows")
            return False

    def _fail_for_good(self, exc: BaseException, batches: int) -> None:
        """An error no retry can outlive (a constraint, a bug, damage): reported as the
        writer's stop, DatabaseCorrupt for damaged pages."""
        error = as_corrupt(self._path, exc) if self._path else exc
        self._stopped_by(error if isinstance(error, DatabaseCorrupt) else CommitFailed(exc))
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("writer.failed", error=self.last_error, batches=batches,
                  action="stopping; a restart catches up from the folders")

    def _commit(self, group: list[Batch]) -> bool:
        """Commit a group, retrying with back-off until it lands or the writer stops
        (abandoned, or its check found damage)."""
        assert self._conn is not None
        delay = BACKOFF_FIRST_S
        last_logged = 0.0
        failures = 0
        compacting = any(batch.compaction is not None for batch in group)
        while True:
            started = time.monotonic()
            try:
                write_batches(self._conn, group, unmark=self._marked)
            except Exception as exc:  # apsw errors, and anything else
                self.attempts += 1
                if not _passes_by_itself(exc):
                    # A constraint, a bug: retrying forever would look like a full disk.
                    self._fail_for_good(exc, batches=len(group))
                    return False
                failures += 1
                now = time.monotonic()
                if self.failing_since is None:
                    self.failing_since = now
                    self.first_error = self.first_error or exc
                self.last_error = f"{type(exc).__name__}: {exc}"
                if now - last_logged >= ERROR_LOG_EVERY_S:
                    log.error("writer.commit_failed", error=self.last_error,
                              sqlite_code=getattr(exc, "extendedresult", None),
                              batches=len(group), retry_in_s=round(delay, 3))
                    last_logged = now
                if self._stopping():
                    log.warning("writer.abandoned" if self._abandon.is_set()
                                else "writer.stopped_by_check", batches=len(group))
                    return False
                self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
                if failures % REOPEN_EVERY == 0:
                    self._reopen()  # a connection that saw an I/O error may stay broken
                continue
            if self._marked:  # the mark's deletion goes into the main file once the check
                self._marked = False  # beside no longer reads (it holds a checkpoint back),
                self._fold_unmark = True  # not at the next automatic checkpoint
            if self.failing_since is not None:
                log.info("writer.recovered",
                         failed_for_s=round(time.monotonic() - self.failing_since, 3))
                self.failing_since = None
                self.last_error = None
            self.attempts += 1
            self.commits += 1
            self.last_commit_monotonic = time.monotonic()
            if compacting:  # how long a compaction holds the writer
                log.info("writer.compaction_committed",
                         ms=int((self.last_commit_monotonic - started) * 1000))
            return True

    def _reopen(self) -> None:
        try:
            fresh = self._connect()
        except Exception as exc:  # the next attempt reports the error
            log.debug("writer.reopen_failed", error=str(exc))
            return
        assert self._conn is not None
        with contextlib.suppress(apsw.Error):
            self._conn.close()
        self._conn = fresh

    def _checkpoint(self, passive: bool = False) -> None:
        assert self._conn is not None
        # While the check reads beside the writes, a TRUNCATE would wait for it.
        mode = "PASSIVE" if passive or self._checking() else "TRUNCATE"
        try:
            self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except apsw.Error as exc:
            log.warning("writer.checkpoint_failed", error=str(exc))


class _StopWriting(Exception):
    """An idle merge failed for good: the writer stops (reported by _fail_for_good)."""


def _slice_batch() -> Batch:
    """A batch of nothing but the search index build's next slice (after READY)."""
    from pipelined.store.batch import Batch  # noqa: PLC0415 - dataclasses: not before READY

    return Batch(search_index="slice")
