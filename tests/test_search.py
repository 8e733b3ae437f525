"""`pipelined search`, its FTS5 index (migration 0004) and shell completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DaemonProcess, Stories, story_text, wait_until

from pipelined.errors import SearchQueryError
from pipelined.store.migrations import apply_migrations, known_migrations
from pipelined.store.search import fts_query, search, uses_fts_syntax


def hits(daemon: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    result = daemon.cli("search", *args, "--json", check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def ids(daemon: DaemonProcess, *args: str) -> list[str]:
    return [h["id"] for h in hits(daemon, *args)]


def index_is_consistent(db: Path) -> bool:
    """FTS5's own check of the external-content index against pipeline_items."""
    conn = apsw.Connection(str(db))
    try:
        conn.execute("INSERT INTO pipeline_search(pipeline_search, rank) "
                     "VALUES ('integrity-check', 1)")
        return True
    finally:
        conn.close()


@pytest.fixture
def searchable(stories: Stories, daemon: DaemonProcess) -> DaemonProcess:
    stories.write("1_backlog", "1_story_export_csv", name="Export as CSV",
                  body="Users want their board as a spreadsheet.\n")
    stories.write("1_backlog", "2_story_report", name="Weekly report",
                  body="The report links to the CSV export at the very end, once.\n"
                       + "Padding about charts and numbers. " * 20 + "\n")
    stories.write("2_current", "3_bug_login", name="Login fails", agent="coder-1",
                  body="The login form drops the password after a crash.\n")
    stories.write("4_merge", "4_story_cafe", name="Café crème menu",
                  body="Naïve résumé parsing for the façade.\n")
    return daemon.start()


class TestSearch:
    def test_finds_a_word_in_a_name_and_in_the_content(self, searchable: DaemonProcess) -> None:
        """A word in a name and a word only in the body are both found, with a snippet."""
        assert ids(searchable, "login") == ["3_bug_login"]
        found = hits(searchable, "spreadsheet")
        assert [h["id"] for h in found] == ["1_story_export_csv"]
        assert "**spreadsheet**" in found[0]["snippet"]

    def test_ranks_a_name_hit_above_a_passing_mention(self, searchable: DaemonProcess) -> None:
        """bm25: the story named after the word comes before one that mentions it once."""
        found = hits(searchable, "csv")
        assert [h["id"] for h in found] == ["1_story_export_csv", "2_story_report"]
        assert found[0]["rank"] < found[1]["rank"]  # lower is better

    def test_stage_filter_and_limit(self, searchable: DaemonProcess) -> None:
        """--stage keeps one stage's stories; --limit cuts the ranked list."""
        assert ids(searchable, "csv", "--stage", "2_current") == []
        assert ids(searchable, "csv", "--stage", "1_backlog") == ["1_story_export_csv",
                                                                  "2_story_report"]
        assert ids(searchable, "csv", "--limit", "1") == ["1_story_export_csv"]

    def test_json_shape(self, searchable: DaemonProcess) -> None:
        """--json: a list of {"id", "stage", "name", "rank", "snippet"}."""
        found = hits(searchable, "password")
        assert len(found) == 1
        hit = found[0]
        assert set(hit) == {"id", "stage", "name", "rank", "snippet"}
        assert (hit["id"], hit["stage"], hit["name"]) == ("3_bug_login", "2_current",
                                                          "Login fails")
        assert isinstance(hit["rank"], float)
        assert "**password**" in hit["snippet"] and "\n" not in hit["snippet"]
        assert hits(searchable, "nothingmatchesthis") == []

    def test_text_output(self, searchable: DaemonProcess) -> None:
        """Plain output: one line per hit, then its snippet, indented."""
        out = searchable.cli("search", "password", check=True).stdout.splitlines()
        assert out[0].split() == ["3_bug_login", "2_current", "Login", "fails"]
        assert out[1].startswith("    ") and "**password**" in out[1]
        empty = searchable.cli("search", "nothingmatchesthis")
        assert empty.returncode == 0 and empty.stdout == ""

    def test_accents_and_case_are_ignored(self, searchable: DaemonProcess) -> None:
        """unicode61 remove_diacritics 2: cafe finds Café, and RÉSUMÉ finds résumé."""
        assert ids(searchable, "cafe creme") == ["4_story_cafe"]
        assert ids(searchable, "RÉSUMÉ") == ["4_story_cafe"]
        assert ids(searchable, "naive facade") == ["4_story_cafe"]

    def test_plain_words_need_no_fts_syntax(self, searchable: DaemonProcess) -> None:
        """Hyphens, dots, colons in plain words are no syntax errors; every word must match."""
        assert ids(searchable, "coder-1") == ["3_bug_login"]  # front matter is content
        assert ids(searchable, "login form.") == ["3_bug_login"]
        assert ids(searchable, "login spreadsheet") == []  # AND of the words
        assert ids(searchable, "passw*") == ["3_bug_login"]
        assert ids(searchable, "report: charts") == ["2_story_report"]
        assert ids(searchable, "3_bug_login") == ["3_bug_login"]  # an id is its words

    def test_fts_operators_are_passed_through(self, searchable: DaemonProcess) -> None:
        """OR, NOT, quotes and column filters are FTS5's."""
        assert sorted(ids(searchable, "login OR spreadsheet")) == ["1_story_export_csv",
                                                                  "3_bug_login"]
        assert ids(searchable, "csv NOT spreadsheet") == ["2_story_report"]
        assert ids(searchable, '"csv export"') == ["2_story_report"]
        assert ids(searchable, "name:report") == ["2_story_report"]

    @pytest.mark.parametrize("query", ['"unbalanced', "login AND", "(csv", "name:"])
    def test_a_bad_query_is_one_error_line(self, searchable: DaemonProcess, query: str) -> None:
        """An FTS5 syntax error is one `Error:` line and exit 1, no traceback."""
        result = searchable.cli("search", query)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"Error: bad search query {query!r}: ")

    def test_finds_a_word_added_by_an_edit_seconds_earlier(
            self, searchable: DaemonProcess, stories: Stories) -> None:
        """The index changes in the same transaction as the row: an edit is found at once."""
        assert ids(searchable, "zeppelin") == []
        stories.write("2_current", "3_bug_login", name="Login fails", agent="coder-1",
                      body="The login form drops the password; a zeppelin was seen.\n")
        assert wait_until(lambda: ids(searchable, "zeppelin") == ["3_bug_login"],
                          timeout=10, what="the edit to be searchable")
        assert ids(searchable, "crash") == []  # the old text is gone from the index

    def test_moves_and_deletes(self, searchable: DaemonProcess, stories: Stories) -> None:
        """A move keeps the story found under its new stage; a delete drops it."""
        stories.move("3_bug_login", "2_current", "4_merge")
        searchable.wait_row("3_bug_login", lambda r: r["stage"] == "4_merge")
        assert ids(searchable, "login", "--stage", "4_merge") == ["3_bug_login"]
        assert ids(searchable, "login", "--stage", "2_current") == []
        stories.path("1_backlog", "1_story_export_csv").unlink()
        searchable.wait_gone("1_story_export_csv")
        assert ids(searchable, "csv") == ["2_story_report"]
        assert ids(searchable, "spreadsheet") == []
        assert searchable.stop() == 0
        assert index_is_consistent(searchable.db)
        assert ids(searchable, "login") == ["3_bug_login"]  # daemon stopped: still works

    def test_only_light_imports(self, searchable: DaemonProcess) -> None:
        """`search` imports no watchdog, pycrdt, rich or yaml (it must start fast)."""
        code = ("import sys\nfrom pipelined.cli import main\n"
                "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                "heavy = {'watchdog', 'pycrdt', 'rich', 'yaml', 'structlog'}\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n")
        result = subprocess.run(
            [sys.executable, "-c", code, "search", "login", "--root", str(searchable.root),
             "--db", str(searchable.db)],
            capture_output=True, text=True, timeout=60, check=True)
        assert result.stdout.strip().splitlines()[-1] == "[]"


class TestQueryParsing:
    @pytest.mark.parametrize(("query", "expected"), [
        ("login", '"login"'),
        ("login form", '"login" "form"'),
        ("coder-1", '"coder-1"'),
        ("log*", '"log"*'),
        ("and or not", '"and" "or" "not"'),
        ("x:y", '"x:y"'),
    ])
    def test_plain_words_are_quoted(self, query: str, expected: str) -> None:
        assert not uses_fts_syntax(query)
        assert fts_query(query) == expected

    @pytest.mark.parametrize("query", ['"a b"', "a OR b", "a AND b", "NOT a", "NEAR(a b)",
                                       "(a)", "name:login", "-content:x", "^start"])
    def test_operators_pass_through(self, query: str) -> None:
        assert uses_fts_syntax(query)
        assert fts_query(query) == query

    def test_empty_query(self) -> None:
        with pytest.raises(SearchQueryError, match="empty"):
            fts_query("   ")


class TestMigration:
    def test_existing_rows_are_indexed(self, tmp_path: Path) -> None:
        """A database made before 0004 gets its rows indexed when 0004 is applied."""
        db = tmp_path / "old.db"
        conn = apsw.Connection(str(db))
        before = [m for m in known_migrations() if m.name < "0004"]
        apply_migrations(conn, db, before)
        assert not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'pipeline_search'").fetchall()
        with conn:
            for n, (name, body) in enumerate([("Export as CSV", "spreadsheet"),
                                              ("Café", "unrelated words")], start=1):
                conn.execute("INSERT INTO pipeline_items(id, name, stage, content) "
                             "VALUES (?, ?, '1_backlog', ?)",
                             (f"{n}_story_x", name, story_text(name=name, body=body)))
        assert "0004_search.sql" in apply_migrations(conn, db)
        assert [h.id for h in search(conn, "spreadsheet")] == ["1_story_x"]
        assert [h.id for h in search(conn, "cafe")] == ["2_story_x"]
        # and the triggers keep it from then on
        with conn:
            conn.execute("UPDATE pipeline_items SET content = 'zeppelin' WHERE id = '1_story_x'")
            conn.execute("UPDATE pipeline_items SET stage = '2_current' WHERE id = '2_story_x'")
            conn.execute("DELETE FROM pipeline_items WHERE id = '2_story_x'")
        assert [h.id for h in search(conn, "zeppelin")] == ["1_story_x"]
        assert search(conn, "spreadsheet") == [] and search(conn, "cafe") == []
        conn.execute("INSERT INTO pipeline_search(pipeline_search, rank) "
                     "VALUES ('integrity-check', 1)")
        conn.close()

    def test_no_index_is_one_error_line(self, tmp_path: Path) -> None:
        """A database still without 0004 (an older daemon's): one line, not a traceback."""
        db = tmp_path / "old.db"
        conn = apsw.Connection(str(db))
        apply_migrations(conn, db, [m for m in known_migrations() if m.name < "0004"])
        conn.close()
        result = subprocess.run([sys.executable, "-m", "pipelined", "search", "x", "--db",
                                 str(db), "--root", str(tmp_path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: bad search query 'x': this database has no")
        assert len(result.stderr.strip().splitlines()) == 1


def console_script() -> str:
    found = Path(sys.executable).parent / "pipelined"
    if found.is_file():
        return str(found)
    which = shutil.which("pipelined")
    if which is None:
        pytest.skip("the pipelined console script is not installed")
    return which


class TestShellCompletion:
    @pytest.mark.parametrize(("shell", "marker"), [
        ("bash", "complete -o nosort -F _pipelined_completion pipelined"),
        ("zsh", "#compdef pipelined"),
        ("fish", "complete --no-files --command pipelined"),
    ])
    def test_completion_script_is_produced(self, shell: str, marker: str) -> None:
        """`_PIPELINED_COMPLETE=<shell>_source pipelined` prints the completion script."""
        result = subprocess.run([console_script()], capture_output=True, text=True, timeout=60,
                                check=False, env={**os.environ,
                                                  "_PIPELINED_COMPLETE": f"{shell}_source"})
        assert result.returncode == 0, result.stderr
        assert marker in result.stdout
        assert "_PIPELINED_COMPLETE" in result.stdout

    def test_bash_completes_commands_and_options(self) -> None:
        """The script's callback completes a command name and an option."""
        def complete(words: str, cword: int) -> list[str]:
            result = subprocess.run(
                [console_script()], capture_output=True, text=True, timeout=60, check=True,
                env={**os.environ, "_PIPELINED_COMPLETE": "bash_complete",
                     "COMP_WORDS": words, "COMP_CWORD": str(cword)})
            return result.stdout.splitlines()
        assert "plain,search" in complete("pipelined sea", 1)
        assert "plain,--stage" in complete("pipelined search x --sta", 3)
