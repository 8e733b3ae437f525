"""The content map: each story's whole file text, as the sync last saw it.

The sync needs a story's previous text when its file changes (docs/design.md,
rule 2: an edit changes only the fields that changed between the previous and
the new version of the file). `pipeline_items.content` holds exactly that text
once a burst is committed, so the map keeps in memory only the texts of
batches the writer has not committed yet, and reads every other one from the
database when a burst asks for it: one query per burst, by id. 10,000 stories
of 2 KB no longer hold 20 MB of text in the daemon (100,000: 200 MB), and a
restart loads none. docs/design.md, "The content map", says why this is safe.

Only the apply thread uses it (it is also the only thread that submits
batches, so the sequence number a batch will get is known when its texts are
set). An oversized file has no content (None).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Protocol

__all__ = ["CommittedTexts", "ContentMap"]


class CommittedTexts(Protocol):
    """Where committed texts are read (store.load.ContentReader: pipeline_items)."""

    def read(self, story_ids: Collection[str]) -> Mapping[str, str | None]:
        """The text of each id that has a row (None: an oversized file)."""

    def close(self) -> None: ...

_GONE = object()  # a story whose row the pending batch deletes


class ContentMap:
    """story id -> file text: pending texts in memory, committed ones from `committed_texts`.

    `next_seq()` is the sequence number the next batch submitted to the writer
    will get, `committed()` the last one committed. Without `committed_texts`
    (a rebuild, a test) every text stays in memory.
    """

    def __init__(self, initial: Iterable[tuple[str, str | None]] = (), *,
                 committed_texts: CommittedTexts | None = None,
                 next_seq: Callable[[], int] = lambda: 0,
                 committed: Callable[[], int] = lambda: -1) -> None:
        # id -> (the batch that writes it, its text or _GONE)
        self._pending: dict[str, tuple[int, object]] = {
            story_id: (0, text) for story_id, text in initial}
        self._read = committed_texts
        self._next_seq = next_seq
        self._committed = committed

    def texts(self, story_ids: Collection[str]) -> dict[str, str | None]:
        """The text of each of `story_ids` the sync has seen (and not deleted since);
        an id it has not seen is missing from the answer."""
        self.forget_committed()
        found: dict[str, str | None] = {}
        to_read = []
        for story_id in story_ids:
            pending = self._pending.get(story_id)
            if pending is None:
                to_read.append(story_id)
            elif pending[1] is not _GONE:
                found[story_id] = pending[1]  # type: ignore[assignment]
        if to_read and self._read is not None:
            found.update(self._read.read(to_read))
        return found

    def set_content(self, story_id: str, text: str | None) -> None:
        """`text` is what the next batch submitted writes for `story_id`."""
        self._pending[story_id] = (self._next_seq(), text)

    def drop(self, story_id: str) -> None:
        """The next batch submitted deletes `story_id`'s row."""
        self._pending[story_id] = (self._next_seq(), _GONE)

    def pending(self) -> int:
        """How many texts wait in memory for the writer."""
        self.forget_committed()
        return len(self._pending)

    def forget_committed(self) -> None:
        """Drop the texts the writer has committed (read from the rows from now on).
        Also called by the apply loop when idle: otherwise the texts of a big burst
        stayed in memory until the next one (10 MB after a first import of 10,000)."""
        if self._read is None:
            return
        committed = self._committed()
        if any(seq <= committed for seq, _ in self._pending.values()):
            self._pending = {story_id: entry for story_id, entry in self._pending.items()
                             if entry[0] > committed}

    def close(self) -> None:
        """Close the connection committed texts are read through (the apply thread's
        last act, so the writer's close can remove the WAL files)."""
        if self._read is not None:
            self._read.close()
