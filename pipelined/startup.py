"""Start-up: from the database and one stat pass to a Reconciler equal to the folders.

The apply thread runs it before its loop (docs/design.md, rule 5). A stat pass
compares the files with the signatures stored at the last commit; what differs
(or what changed settings make stale) is re-read in chunks, each committed by
the writer while the next is parsed. `on_in_sync` is called exactly once, as
soon as the database equals the folders: before the pipeline state is loaded
when nothing changed, after the catch-up is committed otherwise. A small unit
with an injected clock, tested in-process (tests/test_startup.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelined.config import Config
from pipelined.errors import PipelinedError
from pipelined.layout import (
    FileSignature,
    git_busy,
    split_rel_path,
    symlinked_story_ids,
)
from pipelined.logs import get_logger
from pipelined.policies import CompactionPolicy
from pipelined.shaping import reread_for_settings
from pipelined.store.connection import open_read_only
from pipelined.store.load import (
    ContentReader,
    Signatures,
    iter_row_ids,
    iter_signature_rows,
    iter_updates,
    read_unreadable,
)
from pipelined.store.writer import Writer, WriterStopped
from pipelined.survey import Survey, take_survey

if TYPE_CHECKING:  # the sync, the story parser and batches load with the state
    from pipelined.parse_ahead import ParseAhead
    from pipelined.sync import Reconciler, SyncResult

__all__ = ["STARTUP_CHUNK", "Started", "Startup", "StartupStopped", "new_client_id"]

log = get_logger("pipelined.startup")

STARTUP_CHUNK = 1000  # ids per transaction when catching up at startup
# A first import of at least this many stories builds the search index in bulk at
# its end (store.search_build), not row by row: about half the writer's work.
BULK_SEARCH_MIN = 2 * STARTUP_CHUNK
# A catch-up of at least this many ids parses the chunks after its first in a
# worker process (pipelined.parse_ahead) while this thread applies the current one.
PARSE_AHEAD_MIN = 2 * STARTUP_CHUNK


class StartupStopped(Exception):
    """A second SIGTERM/SIGINT stopped the catch-up: the chunks committed so far
    stay, and the next start re-reads only the files of the others."""


def new_client_id() -> int:
    """A random pycrdt client id (32 bits, as Yjs uses), persisted for reuse."""
    return int.from_bytes(os.urandom(4), "big")


@dataclass(slots=True)
class Started:
    """What the start-up hands to the apply loop."""

    reconciler: Reconciler
    compaction: CompactionPolicy  # primed with the size of the loaded history
    deferred: set[str]  # ids found absent: their delete waits for the DeletePolicy


class Startup:
    """Load + catch-up, once per daemon run (on the apply thread)."""

    def __init__(self, config: Config, root: Path, db_path: Path, writer: Writer,
                 on_in_sync: Callable[[int], None],
                 clock: Callable[[], float] = time.monotonic,
                 survey: Survey | None = None,
                 paths_ok: Callable[[], bool] = lambda: True) -> None:
        self.config = config
        self._survey = survey
        # False while the root or the database is not what the daemon started on: the
        # catch-up then deletes nothing at once (the daemon stops on it).
        self._paths_ok = paths_ok
        self.root = root
        self.db_path = db_path
        self.writer = writer
        self._on_in_sync = on_in_sync
        self._in_sync_told = False
        self._clock = clock
        self._parsed_ahead = 0  # chunks the parse-ahead worker answered

    def run(self) -> Started:
        """The survey's changes (pipelined.survey; taken here when none was handed
        over), the state, the catch-up.

        When the survey found nothing to re-read, the database already equals
        the folders: `on_in_sync` is called at once and the state and content
        map load right after. Otherwise the state loads first and the changes
        are committed before.
        """
        started = self._clock()
        survey = self._survey or take_survey(self.db_path, self.root, self.config.stages,
                                             self.config.max_file_bytes, self._clock)
        self._survey = None  # its two listings of every file are freed below
        stored, stored_with, unlistable = survey.stored, survey.stored_with, survey.unlistable
        in_sync_early = survey.unchanged
        if in_sync_early:
            self._in_sync(stored.story_count)
        if not unlistable and survey.same_files:
            touched: set[str] = set()  # every known file there, unchanged
        else:
            from pipelined.sync import changed_story_ids

            known_ids = {split_rel_path(path)[1] for path in stored.by_path}
            touched = changed_story_ids(survey.seen, stored.by_path, known_ids, unlistable)
            del known_ids
        reread = (set() if stored.stored_with == stored_with
                  else reread_for_settings(stored.stored_with, stored_with, stored.by_path))
        touched |= reread
        # The two listings of every file are done with: freed before the state's
        # long-lived objects are made, they leave no holes among them (10,000
        # stories: the daemon's RSS after a restart 84 -> 79 MiB, its peak 85 -> 80).
        files_checked, stat_ms = len(survey.seen), survey.stat_ms
        del survey
        stored = stored._replace(by_path={})
        self.writer.begin()  # its quick_check: after the stat pass
        conn = open_read_only(self.db_path)
        try:
            loaded = self._load_state(conn, stored)
        finally:
            conn.close()
        reconciler = loaded.reconciler
        # Unreadable and symlinked files are looked at again whatever their signature.
        for stage, why in unlistable.items():
            reconciler.note_stage_problem(stage, why)
        try:
            totals, search_owed = self._catch_up(reconciler, touched | reconciler.unreadable,
                                    loaded.mismatch | reread,
                                    new_client=stored.client_id is None,
                                    stored_with=None if stored.stored_with == stored_with
                                    else stored_with,
                                    first_import=stored.story_count == 0,
                                    search_suspended=stored.search_suspended)
        except BaseException:
            reconciler.content.close()
            raise
        if reread:
            log.info("startup.settings_changed", reread=len(reread), now=stored_with,
                     before=stored.stored_with)
        self._in_sync(len(reconciler.state))
        if search_owed:
            try:
                self._build_search_index()
            except BaseException:
                reconciler.content.close()
                raise
        log.info("daemon.startup", stories_loaded=stored.story_count,
                 crdt_updates=loaded.compaction.updates,
                 files_stat_checked=files_checked, files_reread=totals.files_read,
                 created=totals.created, updated=totals.updated, moved=totals.moved,
                 deleted=totals.deleted, ready_before_load=in_sync_early, stat_ms=stat_ms,
                 parsed_ahead=self._parsed_ahead, ms=self._ms_since(started))
        return Started(reconciler, loaded.compaction, totals.absent)

    def _build_search_index(self) -> None:
        """After READY: the search index of a first import, built by the writer in
        slices between later batches; not waited for. Until its last slice is
        committed, `search` says the index is being built; a crash before that
        leaves the note, and the next start goes on with it (docs/design.md)."""
        from pipelined.store.batch import Batch

        try:
            self.writer.submit(Batch(search_index="resume"))
        except WriterStopped:
            raise self._writer_stopped() from None
        log.info("startup.search_index_building",
                 action="search may miss stories until it is built")

    def _ms_since(self, started: float) -> int:
        return int((self._clock() - started) * 1000)

    def _in_sync(self, stories: int) -> None:
        if not self._in_sync_told:
            self._in_sync_told = True
            self._on_in_sync(stories)

    def _catch_up(self, reconciler: Reconciler, touched: set[str], mismatch: set[str],
                  *, new_client: bool, stored_with: str | None = None,
                  first_import: bool = False, search_suspended: bool = False,
                  ) -> tuple[SyncResult, bool]:
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

        A first import of BULK_SEARCH_MIN stories or more suspends the search index
        with its first chunk; the index is then built right after READY (the second
        value returned: owed), as it is by a start that finds it still suspended (a
        crash mid-import or mid-build).
        """
        from pipelined.store.batch import Batch
        from pipelined.sync import SyncResult, logs_each_story

        confirm_absent = not git_busy(self.root)
        ids = sorted(touched | mismatch)
        log_each = logs_each_story(len(ids) + len(reconciler.symlinked))  # the whole catch-up
        totals = SyncResult(Batch())
        last_begin = max(0, len(ids) - 1) // STARTUP_CHUNK * STARTUP_CHUNK
        ahead = self._parse_ahead(reconciler, ids)
        try:
            seq = self._catch_up_chunks(reconciler, ids, mismatch, totals, ahead,
                                        confirm_absent=confirm_absent, log_each=log_each,
                                        new_client=new_client, stored_with=stored_with,
                                        first_import=first_import, last_begin=last_begin)
        finally:
            if ahead is not None:
                ahead.close()
                self._parsed_ahead = ahead.answered
        if seq is not None and not self.writer.wait_committed(seq):
            raise self._writer_stopped()
        reconciler.content.forget_committed()  # all of it: committed
        return totals, search_suspended or (first_import and len(ids) >= BULK_SEARCH_MIN)

    def _parse_ahead(self, reconciler: Reconciler, ids: list[str]) -> ParseAhead | None:
        """A worker process parsing the chunks after the first, for a catch-up of
        PARSE_AHEAD_MIN ids or more on a machine with another core (parse_ahead)."""
        if len(ids) < PARSE_AHEAD_MIN or len(os.sched_getaffinity(0)) < 2:
            return None
        from pipelined.parse_ahead import ParseAhead

        chunks = [ids[begin:begin + STARTUP_CHUNK]
                  for begin in range(STARTUP_CHUNK, len(ids), STARTUP_CHUNK)]
        return ParseAhead(str(reconciler.root), reconciler.stages, chunks,
                          reconciler.max_file_bytes)

    def _catch_up_chunks(self, reconciler: Reconciler, ids: list[str], mismatch: set[str],
                         totals: SyncResult, ahead: ParseAhead | None, *,
                         confirm_absent: bool, log_each: bool, new_client: bool,
                         stored_with: str | None, first_import: bool, last_begin: int,
                         ) -> int | None:
        """Each chunk reconciled and submitted; the last batch's writer sequence."""
        seq = None
        for begin in range(0, max(1, len(ids)), STARTUP_CHUNK):
            chunk = ids[begin:begin + STARTUP_CHUNK]
            result = reconciler.reconcile(chunk,
                                          confirm_absent=confirm_absent and self._paths_ok(),
                                          repair=mismatch.intersection(chunk),
                                          log_each=log_each,
                                          ahead=ahead.take() if ahead and begin else None)
            if new_client and begin == 0:
                result.batch.meta["client_id"] = str(reconciler.state.doc.client_id)
            if first_import and len(ids) >= BULK_SEARCH_MIN and begin == 0:
                result.batch.search_index = "suspend"  # two chunks or more
            totals.absent |= result.absent
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
        return seq

    def _writer_stopped(self) -> BaseException:
        """Why the catch-up cannot go on: a second signal abandoned the writer (not a
        failure), or the writer's own failure (it reported it to the run's Outcome)."""
        if self.writer.abandoned:
            return StartupStopped()
        first = self.writer.first_error
        if isinstance(first, PipelinedError):
            return first
        return RuntimeError("the writer stopped before the startup changes were committed")

    def _load_state(self, conn: Any, stored: Signatures) -> _Loaded:
        """The pycrdt document and the known files, from the database; the content
        map reads the committed texts from there when the sync needs them."""
        from pipelined.content import ContentMap
        from pipelined.state import PipelineState  # pycrdt: loaded only with the state
        from pipelined.sync import KnownFile, Reconciler

        # Row by row from the cursors, the document (the largest thing kept) first: no
        # list of every update, signature or id is made beside it, to leave holes
        # among what is kept (100,000 stories: RSS after a restart 433 -> 387 MiB).
        client_id = stored.client_id if stored.client_id is not None else new_client_id()
        state = PipelineState(client_id)
        sizes: list[int] = []
        applied = state.load(_noting_sizes(iter_updates(conn), sizes))
        compaction = CompactionPolicy(self.config.compact_updates, sum(sizes), applied)
        only_in_state, only_in_rows = state.ids(), set()
        for row_id in iter_row_ids(conn):
            if row_id in only_in_state:
                only_in_state.remove(row_id)
            else:
                only_in_rows.add(row_id)
        mismatch = only_in_state | only_in_rows
        del only_in_state, only_in_rows
        if mismatch:
            log.warning("startup.state_rows_disagree", ids=sorted(mismatch)[:20],
                        count=len(mismatch))
        symlinked = symlinked_story_ids(self.root, self.config.stages)
        writer = self.writer
        content = ContentMap(committed_texts=ContentReader(self.db_path),
                             next_seq=lambda: writer.submitted + 1,
                             committed=lambda: writer.committed)
        known = (KnownFile(sid, stage, FileSignature(mtime, size, inode), bool(winner))
                 for sid, stage, mtime, size, inode, winner in iter_signature_rows(conn))
        reconciler = Reconciler(self.root, self.config.stages, state, content, known,
                                self.config.max_file_bytes, stored.high_water,
                                unreadable=read_unreadable(conn), symlinked=symlinked)
        return _Loaded(reconciler, compaction, mismatch)


def _noting_sizes(updates: Iterator[bytes], sizes: list[int]) -> Iterator[bytes]:
    for update in updates:
        sizes.append(len(update))
        yield update


@dataclass(slots=True)
class _Loaded:
    reconciler: Reconciler
    compaction: CompactionPolicy
    mismatch: set[str]  # ids in the state but not the rows, or the other way round
