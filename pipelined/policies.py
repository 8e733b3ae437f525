"""When the apply thread deletes a vanished story, and when it compacts the history.

Small units with an injected clock, so their rules are tested like the
`Coalescer`'s: scripted times, no threads, no sleeps. The apply thread owns one
of each and is the only caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

__all__ = ["COMPACT_MIN_BYTES", "CompactionPolicy", "DeletePolicy"]

COMPACT_MIN_BYTES = 64 * 1024  # or compact once the new updates outweigh 2x the snapshot


class DeletePolicy:
    """Vanished stories wait here until their delete is due (docs/design.md, rule 1).

    An id found absent is deferred; it is due once it stayed absent for
    `grace_s` of quiet across the whole tree. A tree that never goes quiet (a
    log file written every 50 ms) does not hold a delete forever: past the
    burst cap (`cap_s`) plus the grace it goes ahead. While git visibly works
    (`.git/index.lock`), due deletes wait, up to `git_cap_s`.
    """

    def __init__(self, grace_s: float, cap_s: float, git_cap_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self.cap_s = cap_s
        self.git_cap_s = git_cap_s
        self._clock = clock
        self._since: dict[str, float] = {}  # id -> when it was first found absent

    def __bool__(self) -> bool:
        return bool(self._since)

    def defer(self, story_ids: Iterable[str]) -> None:
        """These ids were found absent (the first time counts)."""
        now = self._clock()
        for story_id in story_ids:
            self._since.setdefault(story_id, now)

    def forget(self, story_ids: Iterable[str]) -> None:
        """These ids were seen again (or deleted): nothing waits for them any more."""
        for story_id in story_ids:
            self._since.pop(story_id, None)

    def due(self, quiet_for_s: float, git_busy: Callable[[], bool]) -> tuple[set[str], float]:
        """The ids whose delete goes ahead now, and how long the oldest of them waited
        past a git lock (0 when git was not in the way)."""
        if not self._since:
            return set(), 0.0
        now = self._clock()
        if quiet_for_s < self.grace_s:
            oldest = min(self._since.values())
            if now - oldest < self.cap_s + self.grace_s:
                return set(), 0.0
        due = {sid for sid, since in self._since.items() if now - since >= self.grace_s}
        if not due:
            return set(), 0.0
        if git_busy():
            waited = now - min(self._since[sid] for sid in due)
            if waited < self.git_cap_s:
                return set(), 0.0  # git is mid-operation: its creates may still come
            return due, waited
        return due, 0.0


class CompactionPolicy:
    """When the persisted pycrdt history is squashed into one snapshot.

    After `every` updates, or once the updates since the last snapshot weigh
    twice that snapshot (and at least COMPACT_MIN_BYTES); `every` 0 never.
    """

    def __init__(self, every: int, snapshot_bytes: int = 0, updates: int = 0) -> None:
        self.every = every
        self.snapshot_bytes = snapshot_bytes  # the last snapshot, or the loaded history
        self.updates = updates  # since the last snapshot
        self.bytes = 0

    def add(self, update_bytes: int) -> bool:
        """One more update of this size was committed; True if a compaction is due."""
        if not self.every:
            return False
        self.updates += 1
        self.bytes += update_bytes
        return self.updates >= self.every or (
            self.updates > 1 and self.bytes >= COMPACT_MIN_BYTES
            and self.bytes >= 2 * self.snapshot_bytes)

    def compacted(self, snapshot_bytes: int) -> None:
        self.snapshot_bytes = snapshot_bytes
        self.updates = 0
        self.bytes = 0
