"""`store.queries` helpers on a database built by the real import code (rebuild's):
one resolver for ids and bare numbers, one table-exists check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner
from conftest import Stories

from pipelined.cli import main
from pipelined.config import resolve
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.schema import refs_from_column
from pipelined.store import queries


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stories, Path]:
    """Stories 12 (two ids share the number), 15, and 30 (deleted since the import)."""
    tmp = tmp_path_factory.mktemp("queries")
    stories = Stories(tmp / "root")
    stories.write("1_backlog", "12_story_login", name="login")
    stories.write("2_current", "12_bug_login_crash", name="crash")
    stories.write("2_current", "15_story_export", name="export")
    stories.write("4_merge", "30_story_gone", name="gone")
    db = tmp / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()  # rebuild logged to this module's stderr
    writer = apsw.Connection(str(db))
    writer.execute("DELETE FROM pipeline_items WHERE id = '30_story_gone'")  # history: deleted
    writer.close()
    stories.path("4_merge", "30_story_gone").unlink()
    return stories, db


@pytest.fixture
def conn(built: tuple[Stories, Path]) -> Iterator[apsw.Connection]:
    connection = apsw.Connection(str(built[1]), flags=apsw.SQLITE_OPEN_READONLY)
    yield connection
    connection.close()


class TestResolveRef:
    def test_a_full_id_names_itself(self, conn: apsw.Connection) -> None:
        """An id with a row resolves to itself; an unknown id to nothing."""
        assert queries.resolve_ref(conn, "15_story_export") == ["15_story_export"]
        assert queries.resolve_ref(conn, "16_story_nope") == []

    def test_a_bare_number_names_every_id_with_it(self, conn: apsw.Connection) -> None:
        """`12` names both ids numbered 12; `015` is 15; a number nobody has, nothing."""
        assert queries.resolve_ref(conn, "12") == ["12_bug_login_crash", "12_story_login"]
        assert queries.resolve_ref(conn, "015") == ["15_story_export"]
        assert queries.resolve_ref(conn, "99") == []

    def test_deleted_stories_only_when_asked(self, conn: apsw.Connection) -> None:
        """A deleted story is found through the history with `deleted`, by id or number."""
        assert queries.resolve_ref(conn, "30") == []
        assert queries.resolve_ref(conn, "30", deleted=True) == ["30_story_gone"]
        assert queries.resolve_ref(conn, "30_story_gone", deleted=True) == ["30_story_gone"]


class TestTableExists:
    def test_tables_and_virtual_tables(self, conn: apsw.Connection) -> None:
        """The story table, the history and the search index exist; a made-up one not."""
        for name in ("pipeline_items", "story_history", "pipeline_search"):
            assert queries.table_exists(conn, name)
        assert not queries.table_exists(conn, "no_such_table")


class TestShowAndLogUseIt:
    def run(self, built: tuple[Stories, Path], *args: str) -> tuple[int, str, str]:
        stories, db = built
        result = CliRunner().invoke(main, [*args, "--root", str(stories.root), "--db", str(db)])
        return result.exit_code, result.stdout, result.stderr

    def test_show_of_a_shared_number_is_ambiguous(self, built: tuple[Stories, Path]) -> None:
        """`show 12` when two ids have number 12: one line naming both, exit 1 (it used
        to say 'no story')."""
        code, _out, err = self.run(built, "show", "12")
        assert code == 1
        assert err.splitlines() == [
            "Error: '12' matches more than one story file: 12_bug_login_crash, "
            "12_story_login (give the full id; `pipelined doctor` shows conflicts)"]

    def test_show_by_number_and_log_of_a_deleted_story(self,
                                                       built: tuple[Stories, Path]) -> None:
        """`show 15` finds its one story; `log 30` finds the deleted one's history."""
        code, out, _err = self.run(built, "show", "15")
        assert code == 0 and "15_story_export" in out
        code, out, _err = self.run(built, "log", "30", "--json")
        assert code == 0 and '"kind": "deleted"' in out.replace('":"', '": "')


class TestPagedListsUseTheirIndexes:
    def test_the_migration_indexes_the_very_expressions_the_queries_order_by(self) -> None:
        """SQLite uses an index on an expression only for the same expression."""
        for migration in ("0006_list_order.sql", "0008_covering_lists.sql"):
            sql = " ".join((Path(__file__).parents[1] / "migrations" / migration
                            ).read_text().split())
            for expression in (queries.STAGE_NUMBER_SQL, queries.STORY_NUMBER_SQL):
                assert " ".join(expression.split()) in sql

    @pytest.mark.parametrize("filters", [
        {}, {"stage": "2_current"}, {"agent": "coder-1"}, {"unassigned": True},
        {"blocked": True}, {"stage": "2_current", "blocked": False},
    ])
    def test_no_page_sorts_or_reads_every_row(self, conn: apsw.Connection,
                                              filters: dict[str, Any]) -> None:
        """Each page query walks an index in order (no temporary sort b-tree), from the
        first page and after a cursor; the count reads an index too (covering)."""
        traced: list[str] = []

        def trace(_cursor: apsw.Cursor, sql: str, _bindings: Any) -> bool:
            traced.append(sql)
            return True

        for after in (None, queries.page_key("2_current", "15_story_export")):
            traced.clear()
            conn.exec_trace = trace
            try:
                queries.page_stories(conn, after=after, limit=5, **filters)
            finally:
                conn.exec_trace = None
            plans = [" ".join(str(step[3]) for step in conn.execute(
                "EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")))
                for sql in traced]
            assert plans and all("TEMP B-TREE" not in plan for plan in plans), plans
            counts = [plan for sql, plan in zip(traced, plans, strict=True) if "count(*)" in sql]
            assert len(counts) == 1 and "COVERING INDEX" in counts[0], counts

    @pytest.mark.parametrize("filters", [{}, {"stage": "2_current"}, {"agent": "coder-1"},
                                         {"stage": "2_current", "blocked": True}])
    def test_ls_reads_only_an_index(self, conn: apsw.Connection,
                                    filters: dict[str, Any]) -> None:
        """`ls` walks a covering index in order (migration 0008): no story's row, which
        holds its content, is read, and nothing is sorted."""
        traced: list[str] = []

        def trace(_cursor: apsw.Cursor, sql: str, _bindings: Any) -> bool:
            traced.append(sql)
            return True

        conn.exec_trace = trace
        try:
            list(queries.iter_stories(conn, **filters))
        finally:
            conn.exec_trace = None
        assert len(traced) == 1
        plan = " ".join(str(step[3]) for step in conn.execute(
            "EXPLAIN QUERY PLAN " + traced[0], [None] * traced[0].count("?")))
        assert "USING COVERING INDEX" in plan and "TEMP B-TREE" not in plan, plan

    def test_pages_match_the_ls_order(self, conn: apsw.Connection) -> None:
        from pipelined.views import sort_stories

        expected = [i["id"] for i in sort_stories(queries.list_stories(conn), "stage")]
        page, total = queries.page_stories(conn, limit=2)
        rest, _ = queries.page_stories(conn, limit=100,
                                       after=queries.page_key(page[-1]["stage"], page[-1]["id"]))
        assert total == len(expected) and [i["id"] for i in page + rest] == expected


class TestRefsColumn:
    def test_decoded_as_json_decodes_it(self) -> None:
        """The split of a plain list gives what json.loads gives, for lists of numbers
        and of every kind of string (quotes, backslashes, the separator itself,
        controls, non-ASCII, empty strings), and both mixed."""
        import json
        import random

        rng = random.Random(17)
        alphabet = ['a', '1', '_', ' ', ',', '"', '\\', '", "', '\n', '\x00', 'é', '\u202e',
                    '[', ']']
        def item() -> str | int:
            if rng.random() < 0.4:
                return rng.choice([0, 1, 7, 10, 123, 10**30])
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))

        cases: list[list[str | int]] = [[], [""], ["", ""], ["1_story_a"], ["a", "b"], [0],
                                        [1, 3], [1, "2_story_b"]]
        cases += [[item() for _ in range(rng.randrange(1, 4))] for _ in range(3000)]
        for value in cases:
            text = json.dumps(value)
            assert refs_from_column(text) == json.loads(text) == value, text

    def test_a_blob_is_json_s(self) -> None:
        import json

        assert refs_from_column(b'["a", 1]') == json.loads(b'["a", 1]') == ["a", 1]  # type: ignore[arg-type]

    @pytest.mark.parametrize("text", ['["]', '["a"b"]', '["a", "b"', '["a",  "b"]x', "[01]",
                                      '["a\tb"]', '["\x00"]', "[1, \x7f2]",
                                      "[1, 2", "[1, ]", "[\u0661]"])
    def test_damage_is_json_s_error(self, text: str) -> None:
        """A damaged column is not split into something: json.loads says what is wrong."""
        import json

        with pytest.raises(json.JSONDecodeError):
            refs_from_column(text)

