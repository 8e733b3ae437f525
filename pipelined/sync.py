"""Reconcile touched story ids (or everything) against the disk into one Batch.

Owned by the apply thread: a `Reconciler` holds the pipeline state, the content
map's writes and the known file signatures, and nothing else may touch them.
Events are only hints: each touched id is looked up on disk now, in every
stage folder, and the disk decides (docs/design.md, rules 1-3).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pipelined.content import ContentMap
from pipelined.layout import (
    FileSignature,
    RefusedFile,
    StageDirs,
    StoryFile,
    open_story,
    read_at_most,
    split_rel_path,
    stages_out_of_root,
    stat_signatures,
    stat_story,
)
from pipelined.logs import get_logger
from pipelined.schema import FIELDS, RESET_ON_MOVE, StoryError, parse_number
from pipelined.store.batch import Batch, RowUpsert, SignatureRow
from pipelined.story import ParsedStory, parse_story, story_number, too_large

if TYPE_CHECKING:  # pycrdt is imported only once the state is loaded
    from pipelined.parse_ahead import Ahead
    from pipelined.state import PipelineState

__all__ = [
    "KnownFile",
    "Reconciler",
    "SyncResult",
    "changed_story_ids",
    "logs_each_story",
    "read_at_most",
    "read_story_file",
]

log = get_logger("pipelined.sync")


PER_STORY_LOG_MAX = 100  # larger reconciles log story.created/moved/... at debug level
MAX_STORY_NUMBER = 2**63 - 1  # what SQLite's INTEGER holds; larger numbers stay stories


class KnownFile(NamedTuple):
    """A file signature as the database last recorded it (a tuple: 10,000 load at start)."""

    story_id: str
    stage: str
    signature: FileSignature
    winner: bool

    @property
    def rel_path(self) -> str:
        return f"{self.stage}/{self.story_id}.md"


@dataclass(slots=True)
class Tracked:
    """All the reconciler keeps of one story besides its state and content.

    One record per story, so a reconcile works on copies and swaps them in only
    once its pycrdt transaction succeeded: a field added here is put back after
    a failure with no code to write (tests/test_reconcile.py checks it).
    """

    files: tuple[KnownFile, ...] = ()  # as last recorded, in every stage folder
    # Read through a symlink: an edit of the target marks only the target's id
    # (or nothing, outside the stage folders), so it is stat-ed again in every
    # flush and every few seconds; the stat follows the link. Rare.
    symlinked: bool = False
    unreadable: bool = False  # the file could not be read: a chmod changes no signature
    # While its file is broken: (last good file fields, state fields then).
    before_broken: tuple[dict[str, Any], dict[str, Any]] | None = None

    def file(self, rel_path: str) -> KnownFile | None:
        return next((kf for kf in self.files if kf.rel_path == rel_path), None)

    def paths(self) -> set[str]:
        return {kf.rel_path for kf in self.files}

    def keeps_nothing(self) -> bool:
        return self == _NOTHING


_NOTHING = Tracked()


@dataclass(slots=True)
class _Pass:
    """One reconcile's work: its result, and what it changes in the reconciler's
    memory, swapped in only once the whole pass succeeded (plan, apply, swap)."""

    result: SyncResult
    confirm_absent: bool
    high_water: int
    ahead: Ahead  # files parsed by another process: path -> (digest, story)
    refused: frozenset[str] = frozenset()  # stage folders now symlinks out of the root
    puts: dict[str, dict[str, Any]] = field(default_factory=dict)
    removes: list[str] = field(default_factory=list)
    tracked: dict[str, Tracked] = field(default_factory=dict)
    contents: dict[str, str | None] = field(default_factory=dict)
    dropped: set[str] = field(default_factory=set)
    # The previous text of each id of the pass the sync has seen (ContentMap.texts).
    before: dict[str, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class SyncResult:
    """One reconcile: the batch to persist and the ids found absent but not yet deleted."""

    batch: Batch
    absent: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)  # left as they were: folder unreadable
    files_read: int = 0
    created: int = 0
    updated: int = 0
    moved: int = 0
    deleted: int = 0

    def add_counts(self, other: SyncResult) -> None:
        """Add another reconcile's counts (a catch-up done in chunks)."""
        self.skipped |= other.skipped
        self.files_read += other.files_read
        self.created += other.created
        self.updated += other.updated
        self.moved += other.moved
        self.deleted += other.deleted


def logs_each_story(count: int) -> bool:
    """Whether a reconcile of `count` ids logs a story.* line per story at info."""
    return count <= PER_STORY_LOG_MAX


def read_story_file(path: str, root_real: str, limit: int) -> bytes:
    """The story file's first `limit` bytes, opened by `layout.open_story` (a regular
    file inside the root, checked on the opened descriptor; RefusedFile if not)."""
    return _read_fd(open_story(path, root_real), limit)


def _read_fd(fd: int, limit: int) -> bytes:
    try:
        return read_at_most(fd, limit)
    finally:
        os.close(fd)


def _stage_key(stage: str) -> tuple[int, str]:
    number, _, rest = stage.partition("_")
    parsed = parse_number(number)
    return (-1 if parsed is None else parsed, rest)


def changed_story_ids(
    seen: Mapping[str, tuple[int, int, int]],
    known: Mapping[str, tuple[int, int, int]],
    story_ids: set[str],
    unlistable: Collection[str] = frozenset(),
) -> set[str]:
    """Ids to reconcile after a stat pass: a file new, gone or with another signature,
    and every known story that has no file at all. Known files in an `unlistable`
    stage (unreadable, not absent) are left out, so nothing there looks deleted."""
    hidden: set[str] = set()
    if unlistable:
        hidden = {split_rel_path(p)[1] for p in known if split_rel_path(p)[0] in unlistable}
        known = {p: s for p, s in known.items() if split_rel_path(p)[0] not in unlistable}
    changed = seen.items() ^ known.items()  # set operations, in C
    touched = {split_rel_path(path)[1] for path, _signature in changed}
    with_files = {path[path.index("/") + 1:-3] for path in seen}
    touched.update(story_ids - with_files - hidden)
    return touched


def _stage_change_kind(found: list[StoryFile], known_before: dict[str, KnownFile],
                       winner: StoryFile, prev: dict[str, Any] | None) -> str | None:
    """How a stage change came about, when it is no move (None: a move, or no change).

    A move is the story's file leaving its stage for a file new to it. If a copy
    is still in the old stage, a copy elsewhere won the conflict (`cp`):
    "conflict". If the old stage's copy went and the winner is the very copy the
    story already had there (same signature: not a file moved over it with
    `mv -f`), the conflict ended by falling back to it: "resolved".
    """
    if prev is None or prev["stage"] == winner.stage:
        return None
    if any(f.stage == prev["stage"] for f in found):
        return "conflict"
    known = known_before.get(winner.rel_path)
    if known is not None and known.signature == winner.signature:
        return "resolved"
    return None


class Reconciler:
    """Turns what is on disk into pipeline-state changes, content and rows."""

    def __init__(
        self,
        root: Path,
        stages: Iterable[str],
        state: PipelineState,
        content: ContentMap,
        known: Iterable[KnownFile],
        max_file_bytes: int,
        high_water: int = 0,
        *,
        unreadable: Collection[str] = (),
        symlinked: Collection[str] = (),
    ) -> None:
        self.root = root
        self._dirs = StageDirs(os.path.realpath(root))  # open during a reconcile only
        self.stages = sorted(stages, key=_stage_key)
        self.state = state
        self.content = content
        self.max_file_bytes = max_file_bytes
        self.high_water = high_water
        self.tracked: dict[str, Tracked] = {}
        for kf in known:
            record = self.tracked.get(kf.story_id)
            if record is None:
                self.tracked[kf.story_id] = Tracked((kf,))
            else:
                record.files += (kf,)
        for story_id in unreadable:  # a chmod since then changed no signature
            self.tracked.setdefault(story_id, Tracked()).unreadable = True
        for story_id in symlinked:
            self.tracked.setdefault(story_id, Tracked()).symlinked = True
        # Ids of the records with `symlinked`, kept with them: every flush reads it.
        self.symlinked: set[str] = set(symlinked)
        # Stage folders that could not be listed or searched, and why. Their stories
        # are kept as they are (unreadable is not empty); the other folders go on.
        # The apply thread probes them and asks for a stat pass once they recover.
        self.stage_problems: dict[str, str] = {}
        self._story_log: Callable[..., Any] = log.info

    @property
    def unreadable(self) -> set[str]:
        """Ids whose file could not be read at the last look."""
        return {story_id for story_id, record in self.tracked.items() if record.unreadable}

    def known_files(self) -> dict[str, KnownFile]:
        """Every recorded file, by path relative to the root."""
        return {kf.rel_path: kf for record in self.tracked.values() for kf in record.files}

    # -- public ------------------------------------------------------------------

    def reconcile(
        self,
        story_ids: Iterable[str],
        *,
        confirm_absent: bool,
        repair: Iterable[str] = (),
        log_each: bool | None = None,
        ahead: Ahead | None = None,
    ) -> SyncResult:
        """Look up each id on disk; build one pycrdt transaction and one Batch.

        An id with no file is deleted only when `confirm_absent`; otherwise it
        is returned in `absent` for the caller to confirm later. Ids in
        `repair` get their row rewritten even if nothing seems to have changed.
        Nothing in memory changes unless the whole reconcile succeeds: the next
        one would otherwise take the new files for already applied. `ahead`
        holds files parsed by another process (parse_ahead), taken only for
        the very bytes read here.
        """
        repair_set = set(repair)
        work = _Pass(SyncResult(Batch()), confirm_absent, self.high_water, ahead or {},
                     stages_out_of_root(self.root, self.stages))
        ids = sorted(set(story_ids) | repair_set | self.symlinked)
        # A first import or a big checkout: one line per story would be thousands
        # of lines (and a good part of an import's time); the caller logs the counts.
        # `log_each` decides for a caller that splits one catch-up into chunks.
        if log_each is None:
            log_each = logs_each_story(len(ids))
        self._story_log = log.info if log_each else log.debug
        work.before = self.content.texts(ids)
        try:
            for story_id in ids:
                record = replace(self.tracked.get(story_id, _NOTHING))
                self._reconcile_one(story_id, record, story_id in repair_set, work)
                work.tracked[story_id] = record
            work.result.batch.crdt_update = self.state.apply(work.puts, work.removes)
        finally:
            self._dirs.close()  # a stage folder replaced later is opened afresh
        self._swap_in(work)
        return work.result

    def _swap_in(self, work: _Pass) -> None:
        for story_id, record in work.tracked.items():
            if record.keeps_nothing():
                self.tracked.pop(story_id, None)
            else:
                self.tracked[story_id] = record
            if record.symlinked:
                self.symlinked.add(story_id)
            else:
                self.symlinked.discard(story_id)
        for story_id in work.dropped:
            self.content.drop(story_id)
        for story_id, text in work.contents.items():
            self.content.set_content(story_id, text)
        self.high_water = work.high_water

    def changed_ids(self) -> tuple[set[str], int]:
        """The stat pass: ids whose files differ from the known signatures, and the
        number of files stat-checked. Reads no file."""
        unlistable: dict[str, str] = {}
        seen = stat_signatures(self.root, self.stages, unlistable)
        known = {kf.rel_path: kf.signature
                 for record in self.tracked.values() for kf in record.files}
        for stage, why in unlistable.items():
            self.note_stage_problem(stage, why)
        return changed_story_ids(seen, known, self.state.ids(), unlistable), len(seen)

    def note_stage_problem(self, stage: str, why: str) -> None:
        """Record a stage folder that cannot be read (logged once per new reason)."""
        if self.stage_problems.get(stage) != why:
            self.stage_problems[stage] = why
            log.warning("sync.stage_unreadable", stage=stage, error=why,
                        action="its stories are kept as they are; retried every few seconds")

    # -- one id ------------------------------------------------------------------

    def _read(self, story_file: StoryFile, record: Tracked,
              ahead: Ahead | None = None) -> ParsedStory | None:
        """Parse the file (or take the story `ahead` parsed from the same bytes); None
        if it vanished since the stat."""
        record.unreadable = False
        try:
            raw = _read_fd(self._dirs.open(story_file.stage, story_file.story_id),
                           self.max_file_bytes + 1)
            if len(raw) > self.max_file_bytes:
                size = story_file.signature.size
                return ParsedStory(
                    dict.fromkeys(FIELDS), content=None, broken=True,
                    errors=(too_large(max(size, len(raw)), self.max_file_bytes),))
        except (FileNotFoundError, RefusedFile):
            return None  # gone, or no story any more (a FIFO, a symlink out of the root)
        except OSError as exc:
            record.unreadable = True
            return ParsedStory(dict.fromkeys(FIELDS), content=None, broken=True,
                               errors=(StoryError("unreadable",
                                                  f"cannot read the file ({exc.strerror})"),))
        parsed_ahead = ahead.pop(story_file.path, None) if ahead else None
        if parsed_ahead is not None:
            from pipelined.parse_ahead import digest  # noqa: PLC0415 - hashlib: only then

            if parsed_ahead[0] == digest(raw):
                return parsed_ahead[1]
        return parse_story(raw, self.max_file_bytes)

    def _find_files(self, story_id: str, record: Tracked,
                    refused: frozenset[str]) -> list[StoryFile] | None:
        """The id's files in every stage folder, or None when absence cannot be told.

        A folder that cannot be searched is a problem of that folder alone, but
        it may hold the id's file: an id known to have its file there, or found
        in no other folder (it may have moved in there), is left as it is until
        the folder can be read again (None); unreadable is not absent. An id
        found elsewhere and not known there is decided by the other folders.
        """
        found: list[StoryFile] = []
        unsearchable = False
        for stage in self.stages:
            try:
                story_file = stat_story(self.root, stage, story_id, refused)
            except OSError as exc:
                self.note_stage_problem(stage, exc.strerror or str(exc))
                if any(kf.stage == stage for kf in record.files):
                    return None
                unsearchable = True
                continue
            if story_file is not None:
                found.append(story_file)
        return None if unsearchable and not found else found

    def _reconcile_one(self, story_id: str, record: Tracked, repair: bool, work: _Pass) -> None:
        """One id into `work`; its `record` (a copy) is updated in place."""
        result = work.result
        batch = result.batch
        found = self._find_files(story_id, record, work.refused)
        if found is None:
            result.skipped.add(story_id)  # maybe in a folder that cannot be searched: kept
            return
        parsed: ParsedStory | None = None
        winner: StoryFile | None = None
        # The state changes only once the whole pass is planned: read it once per id
        # (a pycrdt read is a transaction, and an existing entry seven of them).
        prev = self.state.get(story_id)
        while found:
            order = {s: i for i, s in enumerate(self.stages)}
            winner = max(found, key=lambda f: (f.signature.mtime_ns, order[f.stage]))
            kf = record.file(winner.rel_path)
            unchanged = (
                not repair and prev is not None and prev["stage"] == winner.stage
                and kf is not None and kf.signature == winner.signature
                and story_id in work.before and not record.unreadable
            )
            if unchanged:
                break
            parsed = self._read(winner, record, work.ahead)
            result.files_read += 1
            record.symlinked = winner.symlink
            if parsed is not None:
                break
            found.remove(winner)  # vanished between stat and read
            winner = None

        if winner is None:
            if prev is None and not record.files:
                return
            if not work.confirm_absent:
                result.absent.add(story_id)
                return
            work.removes.append(story_id)
            work.dropped.add(story_id)
            batch.deletes.append(story_id)
            self._drop_paths(batch, record, record.paths())
            record.symlinked = record.unreadable = False
            record.before_broken = None
            result.deleted += 1
            self._story_log("story.deleted", id=story_id, stage=prev["stage"] if prev else None)
            return

        known_before = {kf.rel_path: kf for kf in record.files}
        self._record_files(batch, story_id, record, winner, found)
        self._copy_left_behind(batch, story_id, prev, known_before, winner, found)
        number = story_number(story_id)
        if number is not None and work.high_water < number <= MAX_STORY_NUMBER:
            work.high_water = batch.high_water = number
        if parsed is None:
            return  # same signature, same stage: nothing to read or change
        kind = _stage_change_kind(found, known_before, winner, prev)
        self._apply_parsed(story_id, prev, record, winner, parsed, repair, work, kind)

    def _record_files(
        self,
        batch: Batch,
        story_id: str,
        record: Tracked,
        winner: StoryFile,
        found: list[StoryFile],
    ) -> None:
        present = {f.rel_path for f in found}
        self._drop_paths(batch, record, record.paths() - present)
        losers = [f for f in found if f is not winner]
        new_losers = [f.rel_path for f in losers
                      if (kf := record.file(f.rel_path)) is None or kf.winner]
        if new_losers:
            log.warning("story.conflict", id=story_id, winner=winner.rel_path,
                        losers=sorted(f.rel_path for f in losers))
        files: list[KnownFile] = []
        for story_file in found:
            is_winner = story_file is winner
            kf = record.file(story_file.rel_path)
            sig = story_file.signature
            if kf is None or kf.signature != sig or kf.winner != is_winner:
                kf = KnownFile(story_id, story_file.stage, sig, is_winner)
                batch.signatures.append(SignatureRow(
                    story_file.rel_path, story_id, story_file.stage,
                    sig.mtime_ns, sig.size, sig.inode, is_winner))
            files.append(kf)
        record.files = tuple(files)

    def _copy_left_behind(self, batch: Batch, story_id: str, prev: dict[str, Any] | None,
                          known_before: dict[str, KnownFile], winner: StoryFile,
                          found: list[StoryFile]) -> None:
        """A conflict that ends with the winning copy, in another stage than the copy
        that went, completes a move made in two steps (`cp`, later `rm` of the
        original): one `moved` history row (the stage itself changed at the `cp`)."""
        if len(known_before) < 2 or prev is None or prev["stage"] != winner.stage:
            return
        present = {f.rel_path for f in found}
        left = sorted({kf.stage for path, kf in known_before.items()
                       if path not in present and kf.stage != winner.stage})
        if len(found) == 1 and left:
            batch.moves.append((story_id, left[0], winner.stage))
            self._story_log("story.moved", id=story_id, from_stage=left[0],
                            to_stage=winner.stage)

    @staticmethod
    def _drop_paths(batch: Batch, record: Tracked, paths: set[str]) -> None:
        for path in sorted(paths):
            batch.signature_drops.append(path)
        record.files = tuple(kf for kf in record.files if kf.rel_path not in paths)

    def _previous_version(
        self,
        record: Tracked,
        prev: dict[str, Any],
        old_text: str | None,
        parsed: ParsedStory,
        repair: bool,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(fields of the previous version of the file, state fields to apply changes to).

        A broken version (half written, unparsable) nulls the fields; the next
        good version is compared with the last good one and applied to the state
        as it was then, so a value reset by a move is not brought back.
        """
        if repair:
            return {k: prev[k] for k in FIELDS}, prev
        old = (parse_story(old_text.encode("utf-8"), self.max_file_bytes)
               if old_text is not None else None)
        if old is not None and not old.broken:
            if parsed.broken:
                record.before_broken = (old.fields, {k: prev[k] for k in FIELDS})
            return old.fields, prev
        memo = record.before_broken
        if not parsed.broken:
            record.before_broken = None
        if memo is not None:
            return memo
        return dict.fromkeys(FIELDS), prev

    def _apply_parsed(
        self,
        story_id: str,
        prev: dict[str, Any] | None,
        record: Tracked,
        winner: StoryFile,
        parsed: ParsedStory,
        repair: bool,
        work: _Pass,
        stage_kind: str | None = None,
    ) -> None:
        """The parsed winner into the state and a row; `stage_kind` says how a stage
        change came about when it is no move (see `_stage_change_kind`)."""
        result = work.result
        known = story_id in work.before
        old_text = work.before.get(story_id)
        new_fields = parsed.fields
        if prev is None:
            values: dict[str, Any] = {"stage": winner.stage, **new_fields}
            after = values
            result.created += 1
            self._story_log("story.created", id=story_id, stage=winner.stage)
        else:
            old_fields, base = self._previous_version(record, prev, old_text, parsed, repair)
            # An edit changes only what changed between the two versions of the file.
            file_changes = {k: v for k, v in new_fields.items() if old_fields.get(k) != v}
            target: dict[str, Any] = {**{k: base.get(k) for k in FIELDS}, **file_changes}
            reset = False
            if prev["stage"] != winner.stage:
                target["stage"] = winner.stage
                # A move resets retry_count, unless the same burst set it in the file; a
                # copy winning a conflict, or the conflict's end, is no move.
                if stage_kind is None and RESET_ON_MOVE not in file_changes:
                    target[RESET_ON_MOVE], reset = 0, True
                    if record.before_broken is not None:  # moved while its file is broken
                        good, then = record.before_broken
                        record.before_broken = (good, {**then, RESET_ON_MOVE: 0})
                if stage_kind is None:
                    result.moved += 1
                    self._story_log("story.moved", id=story_id, from_stage=prev["stage"],
                                    to_stage=winner.stage)
                else:
                    log.info("story.stage_" + stage_kind, id=story_id,
                             from_stage=prev["stage"], to_stage=winner.stage)
            values = {k: v for k, v in target.items() if prev.get(k) != v}
            changed_fields = sorted(k for k in values if k != "stage"
                                    and not (k == RESET_ON_MOVE and reset))
            if changed_fields:
                result.updated += 1
                self._story_log("story.updated", id=story_id, fields=changed_fields)
            after = {**prev, **values}
        if values:
            work.puts[story_id] = values
        # Too large or unreadable, a file has no content: its error is all that tells
        # two versions apart, so a new one is written with its error; but not one
        # unreadable again (it is read again at every pass: `self.tracked` is the
        # record before this pass).
        was_unreadable = (before := self.tracked.get(story_id)) is not None and before.unreadable
        content_changed = old_text != parsed.content or not known or (
            parsed.content is None and not (record.unreadable and was_unreadable))
        if values or content_changed or repair or prev is None:
            work.contents[story_id] = parsed.content
            result.batch.upserts.append(RowUpsert(
                story_id=story_id,
                stage=after["stage"],
                fields={k: after.get(k) for k in FIELDS},
                content=parsed.content,
                extra=parsed.extra,
                errors=parsed.errors,
                unreadable=record.unreadable,
                stage_kind=stage_kind if prev is not None and prev["stage"] != after["stage"]
                else None,
            ))
            if parsed.errors:
                log.warning("story.parse_error", id=story_id, path=winner.rel_path,
                            code=parsed.errors[0].code, error=parsed.errors[0].message)
