"""Unit tests of `pipelined.state`: the pycrdt pipeline document."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Map

from pipelined.state import STATE_KEYS, PipelineState

LOGIN = {
    "stage": "1_backlog",
    "name": "Login page",
    "agent": "coder-1",
    "retry_count": 3,
    "blocked": False,
    "depends_on": '[2, "7_auth"]',
}
CRASH = {"stage": "2_current", "name": "Crash", "retry_count": 0, "blocked": True}


@pytest.fixture
def state() -> PipelineState:
    return PipelineState(client_id=1)


class Observer:
    """A second doc holding some updates, recording which keys each later update changes."""

    def __init__(self, updates: list[bytes]) -> None:
        self.doc: Doc[Any] = Doc()
        for update in updates:
            self.doc.apply_update(update)
        self.items: Map[Any] = self.doc.get("items", type=Map)
        self.changes: list[tuple[str, dict[str, Any]]] = []
        # Keep the subscription: dropping it stops the callbacks.
        self.subscription = self.items.observe_deep(
            lambda events: self.changes.extend((str(e.path), dict(e.keys)) for e in events)
        )

    def receive(self, update: bytes) -> list[tuple[str, dict[str, Any]]]:
        self.changes.clear()
        self.doc.apply_update(update)
        return list(self.changes)


class TestPipelineState:
    def test_apply_returns_update_bytes(self, state: PipelineState) -> None:
        """apply of a new story returns the transaction's update as non-empty bytes."""
        update = state.apply({"10_login": LOGIN}, [])

        assert isinstance(update, bytes)
        assert len(update) > 0

    def test_new_story_has_every_key(self, state: PipelineState) -> None:
        """A new story gets every state key; keys not given are null."""
        state.apply({"20_crash": CRASH}, [])

        assert state.get("20_crash") == {**dict.fromkeys(STATE_KEYS), **CRASH}
        assert state.get("20_crash")["agent"] is None  # type: ignore[index]

    def test_fresh_state_loads_the_same_stories(self, state: PipelineState) -> None:
        """A fresh state that loads the returned updates sees the same stories."""
        updates = [
            state.apply({"10_login": LOGIN, "20_crash": CRASH}, []),
            state.apply({"10_login": {"stage": "4_merge", "retry_count": 0}}, []),
            state.apply({"30_new": {"stage": "1_backlog", "name": "New"}}, []),
        ]

        fresh = PipelineState(client_id=2)
        count = fresh.load(u for u in updates if u is not None)

        assert count == 3
        assert fresh.to_dict() == state.to_dict()
        assert fresh.get("10_login") == {**LOGIN, "stage": "4_merge", "retry_count": 0}
        assert fresh.ids() == {"10_login", "20_crash", "30_new"}
        assert len(fresh) == 3
        assert "30_new" in fresh

    def test_snapshot_loads_the_same_stories(self, state: PipelineState) -> None:
        """The snapshot alone rebuilds the same document."""
        state.apply({"10_login": LOGIN, "20_crash": CRASH}, [])
        state.apply({}, ["20_crash"])

        fresh = PipelineState(client_id=2)
        fresh.load([state.snapshot()])

        assert fresh.to_dict() == {"10_login": LOGIN}

    def test_retry_count_comes_back_int(self, state: PipelineState) -> None:
        """retry_count is an int, in the live state and after a reload."""
        update = state.apply({"10_login": LOGIN}, [])
        fresh = PipelineState(client_id=2)
        fresh.load([update])  # type: ignore[list-item]

        for source in (state, fresh):
            value = source.get("10_login")["retry_count"]  # type: ignore[index]
            assert value == 3
            assert type(value) is int

    def test_bool_and_text_types_survive(self, state: PipelineState) -> None:
        """blocked stays a bool and depends_on stays text after a reload."""
        update = state.apply({"20_crash": {**CRASH, "depends_on": "[10]"}}, [])
        fresh = PipelineState(client_id=2)
        fresh.load([update])  # type: ignore[list-item]

        story = fresh.get("20_crash")
        assert story is not None
        assert story["blocked"] is True
        assert story["depends_on"] == "[10]"

    def test_only_changed_keys_are_written(self, state: PipelineState) -> None:
        """An edit's update carries only the keys it changes; the others are untouched."""
        first = state.apply({"10_login": LOGIN}, [])
        other = Observer([first])  # type: ignore[list-item]

        edit = state.apply({"10_login": {"agent": "coder-2"}}, [])

        assert other.receive(edit) == [  # type: ignore[arg-type]
            (
                "['10_login']",
                {"agent": {"action": "update", "oldValue": "coder-1", "newValue": "coder-2"}},
            )
        ]
        assert state.get("10_login") == {**LOGIN, "agent": "coder-2"}

    def test_move_changes_stage_and_keeps_other_keys(self, state: PipelineState) -> None:
        """Writing stage and retry_count leaves name, agent, blocked and depends_on as they were."""
        state.apply({"10_login": LOGIN}, [])

        state.apply({"10_login": {"stage": "2_current", "retry_count": 0}}, [])

        assert state.get("10_login") == {**LOGIN, "stage": "2_current", "retry_count": 0}

    def test_remove(self, state: PipelineState) -> None:
        """remove drops the story; a reload from the updates does not bring it back."""
        updates = [state.apply({"10_login": LOGIN, "20_crash": CRASH}, [])]

        updates.append(state.apply({}, ["10_login"]))

        assert state.get("10_login") is None
        assert "10_login" not in state
        assert state.ids() == {"20_crash"}
        fresh = PipelineState(client_id=2)
        fresh.load(updates)  # type: ignore[arg-type]
        assert fresh.ids() == {"20_crash"}

    def test_put_and_remove_in_one_transaction(self, state: PipelineState) -> None:
        """Puts and removes of one call are one update."""
        first = state.apply({"10_login": LOGIN}, [])

        both = state.apply({"20_crash": CRASH}, ["10_login"])

        fresh = PipelineState(client_id=2)
        fresh.load([first, both])  # type: ignore[list-item]
        assert fresh.ids() == {"20_crash"}
        partial = PipelineState(client_id=3)
        partial.load([first])  # type: ignore[list-item]
        assert partial.ids() == {"10_login"}

    def test_nothing_to_apply_returns_none(self, state: PipelineState) -> None:
        """apply with no puts and no removes returns None."""
        assert state.apply({}, []) is None

    def test_removing_unknown_id_returns_none(self, state: PipelineState) -> None:
        """Removing ids that are not in the state is nothing to do: None."""
        state.apply({"10_login": LOGIN}, [])

        assert state.apply({}, ["99_unknown"]) is None
        assert state.ids() == {"10_login"}

    def test_empty_put_for_known_story_returns_none(self, state: PipelineState) -> None:
        """A put with no changed keys for a known story changes nothing: None."""
        state.apply({"10_login": LOGIN}, [])

        assert state.apply({"10_login": {}}, []) is None

    def test_get_unknown_is_none(self, state: PipelineState) -> None:
        """get of an id that was never put is None."""
        assert state.get("10_nope") is None

    def test_load_returns_count_and_clears_last_update(self, state: PipelineState) -> None:
        """load counts the updates it applied and a later apply returns only its own update."""
        first = state.apply({"10_login": LOGIN}, [])
        fresh = PipelineState(client_id=2)

        assert fresh.load([first]) == 1  # type: ignore[list-item]
        assert fresh.load([]) == 0
        assert fresh.apply({}, []) is None

        update = fresh.apply({"10_login": {"blocked": True}}, [])
        assert update is not None
        other = Observer([first])  # type: ignore[list-item]
        assert [keys for _, keys in other.receive(update)] == [
            {"blocked": {"action": "update", "oldValue": False, "newValue": True}}
        ]

    def test_edits_from_a_reloaded_state_merge(self, state: PipelineState) -> None:
        """Updates made after a reload apply on top of the original updates elsewhere."""
        first = state.apply({"10_login": LOGIN}, [])
        reloaded = PipelineState(client_id=2)
        reloaded.load([first])  # type: ignore[list-item]

        second = reloaded.apply({"10_login": {"stage": "4_merge"}}, [])

        third = PipelineState(client_id=3)
        third.load([first, second])  # type: ignore[list-item]
        assert third.get("10_login") == {**LOGIN, "stage": "4_merge"}
