"""The content map: each story's whole file text, in memory.

Only the apply thread writes it; any thread in the daemon may read it (single
dict operations are atomic under the GIL). Loaded from
`pipeline_items.content` at startup. An oversized file has no content (None).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["ContentMap"]


class ContentMap:
    """story id -> file text."""

    def __init__(self, initial: Iterable[tuple[str, str | None]] = ()) -> None:
        self._texts: dict[str, str | None] = dict(initial)

    def read_content(self, story_id: str) -> str | None:
        """The file text of a story, or None if unknown or not copied (oversized)."""
        return self._texts.get(story_id)

    def all_content_ids(self) -> list[str]:
        return list(self._texts)

    def has(self, story_id: str) -> bool:
        return story_id in self._texts

    def set_content(self, story_id: str, text: str | None) -> None:
        self._texts[story_id] = text

    def drop(self, story_id: str) -> None:
        self._texts.pop(story_id, None)

    def __len__(self) -> int:
        return len(self._texts)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._texts))
