"""Read views over listed stories: readiness, dependencies, sorting, board columns.

Pure: takes the dictionaries `store.queries.list_stories` returns, touches no
database, no folder and no terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pipelined.schema import SORT_KEYS, parse_number
from pipelined.story import story_number

__all__ = [
    "SORT_KEYS",
    "board_columns",
    "is_ready",
    "sort_stories",
    "stage_order",
    "unmet_dependencies",
]

_STAGE_NUMBER = re.compile(r"^([0-9]+)_")

Item = dict[str, Any]


def stage_order(stage: str) -> tuple[int, str]:
    """Stage folders sort by their leading number (`10_done` after `4_merge`)."""
    match = _STAGE_NUMBER.match(stage)
    return (int(match.group(1)) if match else 1 << 62, stage)


def _number(story_id: str) -> int:
    number = story_number(story_id)
    return -1 if number is None else number


class _Index:
    """Stories by id and by number, to resolve `depends_on` entries (numbers or ids)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.by_id: dict[str, Item] = {}
        self.by_number: dict[int, list[Item]] = {}
        for item in items:
            self.by_id[item["id"]] = item
            self.by_number.setdefault(_number(item["id"]), []).append(item)

    def resolve(self, dep: object) -> list[Item]:
        if isinstance(dep, bool):
            return []
        if isinstance(dep, int):
            return self.by_number.get(dep, [])
        if isinstance(dep, str):
            number = parse_number(dep)
            if number is not None:
                return self.by_number.get(number, [])
            found = self.by_id.get(dep)
            return [found] if found is not None else []
        return []


def _unmet(item: Item, index: _Index) -> list[int | str]:
    mine = stage_order(item["stage"])
    unmet: list[int | str] = []
    for dep in item["depends_on"] or []:
        targets = [t for t in index.resolve(dep) if t["id"] != item["id"]]
        # Gone from the pipeline counts as done; present, it must be further along.
        if any(stage_order(t["stage"]) <= mine for t in targets):
            unmet.append(dep)
    return unmet


def unmet_dependencies(items: Sequence[Item]) -> dict[str, list[int | str]]:
    """For each id, the `depends_on` entries not yet in a later stage than the story."""
    index = _Index(items)
    return {item["id"]: _unmet(item, index) for item in items}


def is_ready(item: Item, unmet: Sequence[int | str]) -> bool:
    """Not blocked, and every dependency is in a later stage or gone."""
    return not item["blocked"] and not unmet


def sort_stories(items: Iterable[Item], key: str) -> list[Item]:
    """Order by `key`: stage (then number), id (number), name; updated and created newest first."""
    listed = list(items)
    if key == "stage":
        return sorted(listed, key=lambda i: (stage_order(i["stage"]), _number(i["id"]), i["id"]))
    if key == "id":
        return sorted(listed, key=lambda i: (_number(i["id"]), i["id"]))
    if key == "name":
        return sorted(listed, key=lambda i: (i["name"] is None, (i["name"] or "").casefold(),
                                             _number(i["id"])))
    if key in ("updated", "created"):
        column = f"{key}_at"
        by_number = sorted(listed, key=lambda i: _number(i["id"]))
        return sorted(by_number, key=lambda i: i[column] or "", reverse=True)
    raise ValueError(key)


def board_columns(items: Sequence[Item], stages: Sequence[str],
                  unmet: Mapping[str, list[int | str]] | None = None) -> list[dict[str, Any]]:
    """One column per stage (configured ones first, in folder order), cards by number.

    The shape is `board --json`'s: `[{"stage", "count", "cards": [{"id",
    "number", "name", "agent", "blocked", "depends_on", "unmet"}]}]`. `unmet`
    (from `unmet_dependencies`) is given when `items` are only some stories.
    """
    if unmet is None:
        unmet = unmet_dependencies(items)
    names = sorted({*stages, *(i["stage"] for i in items)}, key=stage_order)
    columns: list[dict[str, Any]] = []
    for stage in names:
        cards = [{"id": i["id"], "number": story_number(i["id"]), "name": i["name"],
                  "agent": i["agent"], "blocked": bool(i["blocked"]),
                  "depends_on": i["depends_on"], "unmet": unmet[i["id"]]}
                 for i in sort_stories((i for i in items if i["stage"] == stage), "id")]
        columns.append({"stage": stage, "count": len(cards), "cards": cards})
    return columns
