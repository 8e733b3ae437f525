"""The pipeline state: a pycrdt document with one map `items`, keyed by story id.

Each value is a map of `stage` and the story fields. Only the apply thread
touches a `PipelineState` (a pycrdt `Doc` used from two threads fails or
deadlocks). Every `apply()` is one pycrdt transaction and returns its update
bytes, which the caller persists together with the rows.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pycrdt import Doc, Map

from pipelined.schema import KIND, STATE_KEYS

__all__ = ["STATE_KEYS", "PipelineState"]

def _coerce(key: str, value: Any) -> Any:
    # pycrdt hands integers back as floats (0 -> 0.0).
    if isinstance(value, float) and KIND.get(key) == "count":
        return int(value)
    return value


@contextmanager
def _freed_on_this_thread() -> Iterator[None]:
    """Free the pycrdt objects dropped inside the block on this thread, at once.

    A document and its root map refer to each other, so a dropped document is
    freed only by the cyclic garbage collector, which runs on whichever thread
    happens to allocate: a pycrdt Doc freed on another thread hangs the daemon.
    The collector is paused for the block, then run here.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        if was_enabled:
            gc.enable()


class PipelineState:
    """The document and the few operations the sync needs."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._items: Map[Any] = self.doc.get("items", type=Map)
        self._last_update: bytes | None = None
        self._subscription = self.doc.observe(self._on_commit)

    def _on_commit(self, event: Any) -> None:
        self._last_update = bytes(event.update)

    def load(self, updates: Iterable[bytes]) -> int:
        """Apply persisted updates in order; return how many were applied."""
        count = 0
        for update in updates:
            self.doc.apply_update(update)
            count += 1
        # The root map must be fetched again after apply_update into a fresh Doc.
        self._items = self.doc.get("items", type=Map)
        self._last_update = None
        return count

    def ids(self) -> set[str]:
        return set(self._items.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, story_id: object) -> bool:
        return isinstance(story_id, str) and story_id in self._items

    def get(self, story_id: str) -> dict[str, Any] | None:
        """One story's state with Python types, or None."""
        entry = self._items.get(story_id)
        if entry is None:
            return None
        with self.doc.transaction():  # one for the seven reads, not one each: 30 -> 22 µs
            return {key: _coerce(key, entry.get(key)) for key in STATE_KEYS}

    def apply(
        self,
        puts: Mapping[str, Mapping[str, Any]],
        removes: Iterable[str],
    ) -> bytes | None:
        """One transaction: set the given keys of each story, remove the others.

        `puts[id]` holds only the keys that changed (all keys for a new story).
        Returns the transaction's update bytes, or None if nothing changed.
        """
        removes = [story_id for story_id in removes if story_id in self._items]
        if not puts and not removes:
            return None
        self._last_update = None
        with self.doc.transaction():
            for story_id, values in puts.items():
                entry = self._items.get(story_id)
                if entry is None:
                    full = dict.fromkeys(STATE_KEYS)
                    full.update(values)
                    self._items[story_id] = Map(full)
                else:
                    for key, value in values.items():
                        entry[key] = value
            for story_id in removes:
                del self._items[story_id]
        update, self._last_update = self._last_update, None
        return update

    def snapshot(self) -> bytes:
        """The whole document as one update."""
        return bytes(self.doc.get_update())

    def fresh_snapshot(self, client_id: int) -> bytes:
        """The current state encoded in a brand-new document (no history at all)."""
        with _freed_on_this_thread():
            return bytes(self._fresh_doc(client_id).get_update())

    def rebase(self, client_id: int) -> bytes:
        """Replace the document with a new one holding only the current state.

        The new document has a new client id and no history: it starts a new
        epoch. Returns its snapshot.
        """
        fresh = self._fresh_doc(client_id)
        with _freed_on_this_thread():
            self.doc.unobserve(self._subscription)
            self.doc = fresh
            self._items = fresh.get("items", type=Map)
            self._last_update = None
            self._subscription = fresh.observe(self._on_commit)
        return bytes(fresh.get_update())

    def _fresh_doc(self, client_id: int) -> Doc[Any]:
        current = self.to_dict()
        fresh: Doc[Any] = Doc(client_id=client_id)
        items = fresh.get("items", type=Map)
        with fresh.transaction():
            for story_id, values in current.items():
                items[story_id] = Map(values)
        return fresh

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every story's state (slow for large documents: not for hot paths)."""
        return {story_id: self.get(story_id) or {} for story_id in self._items.keys()}  # noqa: SIM118
