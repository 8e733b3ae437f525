"""The story history (`story_history`, kept by triggers): `log`, `events`, `stats`.

Small pure computations over history rows (the queries are in
`pipelined.store.history`); no watchdog, no pycrdt, so the CLI stays fast. One
history row as JSON is {"seq", "at", "id", "kind", "from_stage", "to_stage",
"fields"}.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelined.store import history as store_history
from pipelined.terminal import field_text

if TYPE_CHECKING:
    import apsw

__all__ = [
    "entry_line",
    "finished_per_week",
    "normalize_since",
    "percentile",
    "stage_durations",
    "stats",
]

def normalize_since(value: str) -> str:
    """A date or RFC 3339 time -> the UTC text form of `at` ('...T...:..:..000Z').

    A date alone is its midnight UTC; a time without offset is taken as UTC.
    Raises ValueError on anything else.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def entry_line(entry: dict[str, Any]) -> str:
    """One history row as a line of text: seq, time, id, what happened."""
    return f"{entry['seq']:>6}  {entry['at']}  {entry['id']}  {entry_what(entry)}"


def entry_what(entry: dict[str, Any]) -> str:
    """What a history row says happened, in words."""
    kind = entry["kind"]
    if kind == "created":
        what = f"created in {entry['to_stage']}"
    elif kind == "moved":
        what = f"moved {entry['from_stage']} -> {entry['to_stage']}"
    elif kind == "conflict":
        what = (f"copied into {entry['to_stage']}, which wins the conflict "
                f"(the copy in {entry['from_stage']} is kept)")
    elif kind == "resolved":
        what = f"conflict over: back to the copy in {entry['to_stage']}"
    elif kind == "updated":
        changes = entry.get("changes")
        what = "updated " + (", ".join(
            f"{name} {field_text(old)} -> {field_text(new)}"
            for name, (old, new) in changes.items())
            if changes else ", ".join(entry["fields"] or []))
    elif kind == "deleted":
        what = f"deleted from {entry['from_stage']}"
    else:
        what = kind
    return what


# -- stats ------------------------------------------------------------------------


def relative(at: str, now: datetime | None = None) -> str:
    """An RFC 3339 time as people say it: `just now`, `3 min ago`, `5 h ago`,
    `2 days ago`, then the date."""
    seconds = ((now or datetime.now(UTC)) - _parse_at(at)).total_seconds()
    if seconds < 0:
        return at  # a clock ahead of ours: the time itself
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    return _parse_at(at).strftime("%Y-%m-%d")


def _parse_at(at: str) -> datetime:
    return datetime.fromisoformat(at.replace("Z", "+00:00"))


def stage_durations(entries: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Seconds each story spent in a stage, per stage, from consecutive history rows.

    A stay starts at `created` or `moved` into the stage and ends at the next
    `moved` or `deleted` of that story; a stay not ended yet is not counted.
    """
    entered: dict[str, tuple[str, datetime]] = {}
    durations: dict[str, list[float]] = {}
    for entry in sorted(entries, key=lambda e: int(e["seq"])):
        story_id, kind = entry["id"], entry["kind"]
        if kind not in ("created", "moved", "deleted"):
            continue
        at = _parse_at(entry["at"])
        if kind in ("moved", "deleted") and story_id in entered:
            stage, since = entered.pop(story_id)
            durations.setdefault(stage, []).append(max(0.0, (at - since).total_seconds()))
        if kind in ("created", "moved") and entry["to_stage"] is not None:
            entered[story_id] = (str(entry["to_stage"]), at)
    return durations


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (the median is fraction 0.5)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def finished_per_week(entries: Iterable[dict[str, Any]], finish_stage: str) -> dict[str, int]:
    """Stories moved into `finish_stage`, per ISO week ('2026-W48'), each story once a week."""
    seen: set[tuple[str, str]] = set()
    weeks: dict[str, int] = {}
    for entry in entries:
        if entry["kind"] != "moved" or entry["to_stage"] != finish_stage:
            continue
        year, week, _day = _parse_at(entry["at"]).isocalendar()
        key = f"{year}-W{week:02d}"
        if (entry["id"], key) in seen:
            continue
        seen.add((entry["id"], key))
        weeks[key] = weeks.get(key, 0) + 1
    return dict(sorted(weeks.items()))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats(conn: apsw.Connection, stages: Sequence[str]) -> dict[str, Any]:
    """Counts per stage, time in each stage (median, p90), stories finished per week."""
    counts, entries = store_history.stats_rows(conn)
    durations = stage_durations(entries)
    order = list(stages) + sorted((set(counts) | set(durations)) - set(stages))
    finish_stage = stages[-1]
    return {
        "stages": {stage: counts.get(stage, 0) for stage in order
                   if stage in stages or stage in counts},
        "time_in_stage": {
            stage: {"count": len(durations[stage]),
                    "median_s": _round(percentile(durations[stage], 0.5)),
                    "p90_s": _round(percentile(durations[stage], 0.9))}
            for stage in order if stage in durations
        },
        "finish_stage": finish_stage,
        "finished_per_week": finished_per_week(entries, finish_stage),
    }
