"""kill -9 at random moments: after every restart the database equals the folders,
created_at is the first one ever seen, and the persisted pipeline state (pycrdt
updates) agrees with the rows. The benchmark runs more rounds (bench_crash.py)."""

from __future__ import annotations

import json
import random
import signal
import time

from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, story_text

from pipelined.state import PipelineState

STORIES = 1000


def state_matches_rows(daemon: DaemonProcess) -> bool:
    """The document rebuilt from the persisted updates equals the metadata columns."""
    state = PipelineState(client_id=11)
    state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
    doc = state.to_dict()
    rows = daemon.rows()
    if set(doc) != set(rows):
        return False
    for story_id, values in doc.items():
        row = rows[story_id]
        deps = json.loads(values["depends_on"]) if values["depends_on"] else None
        row_deps = json.loads(row["depends_on"]) if row["depends_on"] else None
        blocked = None if row["blocked"] is None else bool(row["blocked"])
        if (values["stage"], values["name"], values["agent"], values["retry_count"],
                values["blocked"], deps) != (row["stage"], row["name"], row["agent"],
                                             row["retry_count"], blocked, row_deps):
            return False
    return True


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
