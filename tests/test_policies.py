"""The delete and compaction policies, on scripted times (no threads, no sleeps)."""

from __future__ import annotations

from pipelined.policies import COMPACT_MIN_BYTES, CompactionPolicy, DeletePolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock) -> DeletePolicy:
    return DeletePolicy(grace_s=0.5, cap_s=3.0, git_cap_s=10.0, clock=clock)


def never_busy() -> bool:
    return False


class TestDeletePolicy:
    def test_due_after_the_grace_in_a_quiet_tree(self) -> None:
        """An absent id is due once it stayed absent for the grace, the tree quiet."""
        clock = Clock()
        deletes = policy(clock)
        deletes.defer({"1_a"})
        assert deletes.due(quiet_for_s=1.0, git_busy=never_busy) == (set(), 0.0)
        clock.now += 0.5
        assert deletes.due(quiet_for_s=1.0, git_busy=never_busy) == ({"1_a"}, 0.0)

    def test_seen_again_is_forgotten(self) -> None:
        """An id that came back (a move or an edit by git) is never deleted."""
        clock = Clock()
        deletes = policy(clock)
        deletes.defer({"1_a", "2_b"})
        deletes.forget({"1_a"})
        clock.now += 5
        assert deletes.due(1.0, never_busy)[0] == {"2_b"}

    def test_first_absence_counts(self) -> None:
        """Deferring an id again does not restart its wait."""
        clock = Clock()
        deletes = policy(clock)
        deletes.defer({"1_a"})
        clock.now += 0.4
        deletes.defer({"1_a"})
        clock.now += 0.1
        assert deletes.due(1.0, never_busy)[0] == {"1_a"}

    def test_a_busy_tree_holds_deletes_until_the_cap(self) -> None:
        """While the tree is never quiet, a delete waits, but not past cap + grace."""
        clock = Clock()
        deletes = policy(clock)
        deletes.defer({"1_a"})
        clock.now += 3.4
        assert deletes.due(quiet_for_s=0.05, git_busy=never_busy)[0] == set()
        clock.now += 0.1
        assert deletes.due(quiet_for_s=0.05, git_busy=never_busy)[0] == {"1_a"}

    def test_git_at_work_holds_deletes_up_to_its_cap(self) -> None:
        """With `.git/index.lock` present a due delete waits; past the git cap it goes,
        and says how long it waited."""
        clock = Clock()
        deletes = policy(clock)
        deletes.defer({"1_a"})
        clock.now += 1
        assert deletes.due(1.0, git_busy=lambda: True) == (set(), 0.0)
        clock.now += 9
        due, waited = deletes.due(1.0, git_busy=lambda: True)
        assert due == {"1_a"} and waited == 10.0

    def test_empty_is_false(self) -> None:
        """Nothing deferred: the policy is falsy (the apply loop polls less often)."""
        deletes = policy(Clock())
        assert not deletes
        deletes.defer({"1_a"})
        assert deletes


class TestCompactionPolicy:
    def test_every_n_updates(self) -> None:
        """The `every`-th update since the last snapshot asks for a compaction."""
        compaction = CompactionPolicy(every=3, snapshot_bytes=10**9)
        assert [compaction.add(10) for _ in range(3)] == [False, False, True]
        compaction.compacted(500)
        assert compaction.updates == 0 and compaction.snapshot_bytes == 500

    def test_updates_outweighing_twice_the_snapshot(self) -> None:
        """Updates weighing twice the snapshot (and the minimum) ask for one early."""
        compaction = CompactionPolicy(every=1000, snapshot_bytes=COMPACT_MIN_BYTES)
        assert not compaction.add(COMPACT_MIN_BYTES)  # one update is never compacted
        assert compaction.add(COMPACT_MIN_BYTES)

    def test_off(self) -> None:
        """`compact_updates = 0` never compacts."""
        compaction = CompactionPolicy(every=0)
        assert not any(compaction.add(10**7) for _ in range(5))
