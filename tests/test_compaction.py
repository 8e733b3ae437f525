"""Compaction of the persisted pycrdt history, and rebasing onto a new epoch."""

from __future__ import annotations

import pytest
from conftest import DaemonProcess, Stories, folder_matches_db

from pipelined.state import PipelineState


def edit_many(stories: Stories, daemon: DaemonProcess, count: int) -> None:
    """`count` edits, each its own flush (waited for), cycling over the stories."""
    for k in range(count):
        story_id = f"{k % 3 + 1}_story_c"
        stories.write("2_current", story_id, name=f"name {k}")
        daemon.wait_row(story_id, lambda r, k=k: r["name"] == f"name {k}")


def stored_state(daemon: DaemonProcess) -> dict[str, dict[str, object]]:
    state = PipelineState(client_id=9)
    state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
    return state.to_dict()


class TestCompaction:
    def test_history_is_squashed_into_a_snapshot(self, stories: Stories,
                                                 daemon: DaemonProcess) -> None:
        """After compact_updates updates the rows before a snapshot are gone, and the
        snapshot alone rebuilds a state equal to the rows, before and after a restart."""
        for n in range(3):
            stories.write("2_current", f"{n + 1}_story_c", name="start")
        daemon.start(env={"PIPELINED_COMPACT_UPDATES": "10"})
        edit_many(stories, daemon, 25)
        daemon.wait_log("writer.compaction_committed")
        kinds = [r[0] for r in daemon.query("SELECT kind FROM crdt_updates ORDER BY seq")]
        assert kinds[0] == "snapshot" and len(kinds) < 15
        rows = daemon.rows()
        assert {i: s["name"] for i, s in stored_state(daemon).items()} == {
            i: r["name"] for i, r in rows.items()}
        assert daemon.stop() == 0
        daemon.start(env={"PIPELINED_COMPACT_UPDATES": "10"})
        assert folder_matches_db(stories, daemon)
        assert daemon.cli("doctor").returncode == 0

    @pytest.mark.slow
    def test_a_grown_snapshot_is_rebased_onto_a_new_epoch(self, stories: Stories,
                                                          daemon: DaemonProcess) -> None:
        """Overwrites grow even a snapshot; past 2x a fresh encoding the document is
        rebuilt from the current state, as a new epoch with a new client id."""
        for n in range(3):
            stories.write("2_current", f"{n + 1}_story_c", name="start")
        daemon.start(env={"PIPELINED_COMPACT_UPDATES": "12"})
        client_before = daemon.query("SELECT value FROM daemon_meta WHERE key='client_id'")
        edit_many(stories, daemon, 96)
        events = [e for e in daemon.log_events() if e.get("event") == "crdt.compacted"]
        assert any(e["rebased"] for e in events), events
        epochs = daemon.query("SELECT epoch FROM crdt_epochs ORDER BY epoch")
        assert len(epochs) >= 2
        assert daemon.query("SELECT value FROM daemon_meta WHERE key='client_id'") != \
            client_before
        assert daemon.stop() == 0
        daemon.start()
        assert folder_matches_db(stories, daemon)
        assert daemon.cli("doctor").returncode == 0
        assert daemon.query("SELECT count(*) FROM crdt_updates WHERE kind='snapshot'") == [(1,)]
