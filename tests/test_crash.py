"""kill -9 at random moments: after every restart the database equals the folders,
created_at is the first one ever seen, and the persisted pipeline state (pycrdt
updates) agrees with the rows. The benchmark runs more rounds (bench_durability.py)."""

from __future__ import annotations

import random
import signal
import time

import pytest
from conftest import (
    STAGES,
    DaemonProcess,
    Stories,
    folder_matches_db,
    state_matches_rows,
    story_text,
)

STORIES = 1000


def burst(stories: Stories, rng: random.Random, where: dict[str, str], size: int,
          round_no: int) -> None:
    """Edit and move `size` random stories (no creates or deletes: every id keeps its
    first created_at)."""
    for story_id in rng.sample(sorted(where), size):
        stage = where[story_id]
        if rng.random() < 0.5:
            target = rng.choice([s for s in STAGES if s != stage])
            stories.move(story_id, stage, target)
            where[story_id] = target
        else:
            stories.write(stage, story_id, name=f"round {round_no} {story_id}",
                          retry_count=rng.randint(0, 3), blocked=rng.random() < 0.2)


class TestCrashTorture:
    @pytest.mark.slow
    def test_kill_nine_at_random_moments(self, stories: Stories,
                                         daemon: DaemonProcess) -> None:
        """Several rounds of burst + SIGKILL (one in the middle of a 1,000-story flush)."""
        rng = random.Random(20261126)
        where: dict[str, str] = {}
        for n in range(STORIES):
            story_id = f"{n + 1}_story_t"
            where[story_id] = STAGES[n % 3]
            stories.write(where[story_id], story_id, story_text(name=f"t{n}", retry_count=1))
        daemon.start()
        first_created = {i: r["created_at"] for i, r in daemon.rows().items()}
        assert len(first_created) == STORIES
        rounds = [(100, rng.uniform(0.0, 0.4)) for _ in range(3)] + [(STORIES, 0.15)]
        for round_no, (size, delay) in enumerate(rounds):
            burst(stories, rng, where, size, round_no)
            time.sleep(delay)  # the kill lands at a random moment of the settle/flush
            daemon.stop(signal.SIGKILL)
            daemon.start()
            assert folder_matches_db(stories, daemon), f"drift after round {round_no}"
            rows = daemon.rows()
            assert {i: r["created_at"] for i, r in rows.items()} == first_created
            assert state_matches_rows(daemon), f"state and rows disagree, round {round_no}"
        assert daemon.cli("doctor").returncode == 0
        assert daemon.stop() == 0
