"""What one settled burst asks the database to do, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelined.schema import StoryError

__all__ = ["Batch", "Compaction", "RowUpsert", "SignatureRow"]


@dataclass(frozen=True, slots=True)
class RowUpsert:
    """A story's full row: metadata equal to the pipeline state, content equal to the file."""

    story_id: str
    stage: str
    fields: dict[str, Any]  # name, agent, retry_count, blocked, depends_on
    content: str | None
    extra: dict[str, Any]
    errors: tuple[StoryError, ...]
    unreadable: bool = False  # the file could not be read (its errors say why)
    # How its stage changed when that was no move: "conflict" or "resolved"
    # (migration 0007); None for a move, or no stage change.
    stage_kind: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureRow:
    """One story file as last seen on disk."""

    path: str  # '<stage>/<id>.md'
    story_id: str
    stage: str
    mtime_ns: int
    size: int
    inode: int
    winner: bool


@dataclass(frozen=True, slots=True)
class Compaction:
    """A snapshot of the whole document that replaces every update committed before it.

    With `new_epoch` it starts a new document (a rebase): `client_id` is the new
    document's pycrdt client id.
    """

    snapshot: bytes
    new_epoch: bool = False
    client_id: int | None = None
    reason: str = ""


@dataclass(slots=True)
class Batch:
    """Everything one flush changes; committed in one SQLite transaction."""

    crdt_update: bytes | None = None
    upserts: list[RowUpsert] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    signatures: list[SignatureRow] = field(default_factory=list)
    signature_drops: list[str] = field(default_factory=list)
    high_water: int | None = None
    meta: dict[str, str] = field(default_factory=dict)
    compaction: Compaction | None = None  # applied after everything above
    # (story id, from stage, to stage): moves no row change records, written to the
    # history directly (a `cp` then, later, an `rm` of the original; sync.py)
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    # A first import builds the search index in bulk: "suspend" (before this batch's
    # rows) drops the index's triggers, "resume" (after them) starts building the
    # index anew, which the writer goes on with between batches ("slice", one of
    # its own making), the last slice putting the triggers back (store/search_build.py).
    search_index: str | None = None

    def is_empty(self) -> bool:
        return not (
            self.crdt_update or self.upserts or self.deletes or self.signatures
            or self.signature_drops or self.high_water is not None or self.meta
            or self.compaction or self.moves or self.search_index
        )
