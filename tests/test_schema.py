"""The story schema (`pipelined.schema`) is the one description of the fields: the
database, the parser, the state and the reads all follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    parse_number,
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


class TestStoryNumbers:
    @pytest.mark.parametrize(("text", "number"), [
        ("12", 12), ("007", 7), ("9" * 18, int("9" * 18)), ("9" * 19, None), ("9" * 5000, None),
        ("²", None), ("١٢", None), ("", None), ("12a", None), ("-1", None),
    ])
    def test_parse_number(self, text: str, number: int | None) -> None:
        """ASCII digits only, and few enough for SQLite: `int()` would take `١٢` and choke
        on `²` and on 5,000 digits."""
        assert parse_number(text) == number


class TestOddNumbersDoNotBreakReads:
    def test_a_huge_number_and_odd_digits(self, tmp_path: Path) -> None:
        """An id with 200 digits is a story with no number (the import goes on, the
        high-water mark ignores it); a dependency written `²` names no story (before:
        ValueError in `ls --ready`); a reference of 5,000 digits names no story."""
        from conftest import Stories

        from pipelined.config import resolve
        from pipelined.maintenance import rebuild
        from pipelined.store import queries
        from pipelined.store.connection import open_read_only
        from pipelined.views import unmet_dependencies

        stories = Stories(tmp_path / "root")
        huge = "9" * 200 + "_story_huge"
        stories.write("1_backlog", huge, name="huge")
        stories.write("1_backlog", "3_story_dep", name="dep", depends_on=["²"])
        result = rebuild(resolve({"root": stories.root, "db": tmp_path / "p.db"}, env={}))
        assert (result.stories, result.high_water) == (2, 3)
        conn = open_read_only(tmp_path / "p.db")
        items = queries.list_stories(conn)
        assert unmet_dependencies(items)["3_story_dep"] == []  # names no story: none waits
        assert queries.resolve_ref(conn, "9" * 5000) == []
        assert queries.resolve_ref(conn, huge) == [huge]
        conn.close()
