"""The story schema (`pipelined.schema`) is the one description of the fields: the
database, the parser, the state and the reads all follow it."""

from __future__ import annotations

from pathlib import Path

from pipelined.schema import (
    FIELDS,
    ITEM_COLUMNS,
    KIND,
    RESET_ON_MOVE,
    STATE_KEYS,
    StoryError,
    errors_from_column,
    errors_to_column,
    from_column,
    to_column,
)
from pipelined.state import PipelineState
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.story import parse_story

VALID = {"text": '"words"', "count": "3", "flag": "true", "refs": "[12, 13_story_x]"}


class TestSchema:
    def test_the_table_has_exactly_the_schemas_columns(self, tmp_path: Path) -> None:
        """`pipeline_items` after every migration: the schema's columns plus content."""
        db = tmp_path / "p.db"
        conn = open_writer(db)
        apply_migrations(conn, db)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(pipeline_items)")]
        conn.close()
        assert sorted(columns) == sorted([*ITEM_COLUMNS, "content"])
        assert set(FIELDS) <= set(ITEM_COLUMNS)

    def test_every_field_kind_parses(self) -> None:
        """The parser knows every field's kind: a valid value of each comes through."""
        text = "---\n" + "".join(f"{name}: {VALID[KIND[name]]}\n" for name in FIELDS) + "---\n"
        parsed = parse_story(text.encode(), 1 << 20)
        assert parsed.errors == ()
        assert all(parsed.fields[name] is not None for name in FIELDS)

    def test_state_holds_the_stage_and_every_field(self) -> None:
        """The pipeline state keeps `STATE_KEYS`, numbers back as ints."""
        state = PipelineState(client_id=1)
        values = {"stage": "1_backlog", "name": "n", "agent": None, "retry_count": 2,
                  "blocked": True, "depends_on": "[1]"}
        assert set(values) == set(STATE_KEYS)
        state.apply({"1_a": values}, [])
        assert state.get("1_a") == values
        assert isinstance(state.get("1_a")["retry_count"], int)  # type: ignore[index]
        assert RESET_ON_MOVE in FIELDS

    def test_columns_round_trip(self) -> None:
        """A flag is stored as 0/1 and read as a bool; refs are read as a list."""
        assert to_column("blocked", True) == 1 and from_column("blocked", 1) is True
        assert to_column("blocked", None) is None and from_column("blocked", None) is None
        assert from_column("depends_on", "[12, \"13_x\"]") == [12, "13_x"]
        assert to_column("name", "x") == "x" == from_column("name", "x")

    def test_reads_follow_the_schema(self, tmp_path: Path) -> None:
        """A row written by the writer's SQL reads back as the schema says."""
        from pipelined.store import queries
        from pipelined.store.batch import Batch, RowUpsert
        from pipelined.store.writer import write_batches

        db = tmp_path / "p.db"
        conn = open_writer(db)
        apply_migrations(conn, db)
        fields = {"name": "n", "agent": "a", "retry_count": 1, "blocked": False,
                  "depends_on": "[7]"}
        write_batches(conn, [Batch(upserts=[RowUpsert("1_a", "2_current", fields, "text",
                                                      {}, ())])])
        item = queries.get_story(conn, "1_a")
        conn.close()
        assert item is not None
        assert {k: item[k] for k in FIELDS} == {**fields, "depends_on": [7]}


class TestErrorColumn:
    def test_errors_round_trip_with_their_codes(self) -> None:
        """Stored as JSON objects, read back as the same codes and messages; none is NULL."""
        errors = (StoryError("bad_value", "agent: expected text, got 1"),
                  StoryError("duplicate_key", "duplicate key 'é' in the front matter"))
        stored = errors_to_column(errors)
        assert errors_from_column(stored) == [e._asdict() for e in errors]
        assert errors_to_column(()) is None and errors_from_column(None) == []

    def test_messages_stored_before_codes_read_as_unknown(self) -> None:
        """A database written by a version before error codes holds bare messages."""
        assert errors_from_column('["file is empty"]') == [
            {"code": "unknown", "message": "file is empty"}]
