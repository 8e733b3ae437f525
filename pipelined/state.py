"""The pipeline state: a pycrdt document with one map `items`, keyed by story id.

Each value is a map of `stage` and the story fields. Only the apply thread
touches a `PipelineState` (a pycrdt `Doc` used from two threads fails or
deadlocks). Every `apply()` is one pycrdt transaction and returns its update
bytes, which the caller persists together with the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pycrdt import Doc, Map

__all__ = ["STATE_KEYS", "PipelineState"]

STATE_KEYS = ("stage", "name", "agent", "retry_count", "blocked", "depends_on")


def _coerce(key: str, value: Any) -> Any:
    # pycrdt hands integers back as floats (0 -> 0.0).
    if key == "retry_count" and isinstance(value, float):
        return int(value)
    return value


class PipelineState:
    """The document and the few operations the sync needs."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self._items: Map[Any] = self.doc.get("items", type=Map)
        self._last_update: bytes | None = None
        self.doc.observe(self._on_commit)

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

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every story's state (slow for large documents: not for hot paths)."""
        return {story_id: self.get(story_id) or {} for story_id in self._items.keys()}  # noqa: SIM118
