"""`ls --json` streams from SQLite in the order of `ls`: the same text as the sorted
list printed whole, on a database built by the real import code."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Stories

from pipelined.cli import main
from pipelined.commands.output import print_json, print_json_stream
from pipelined.config import resolve
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.store import queries
from pipelined.store.connection import open_read_only
from pipelined.views import sort_stories


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Numbers of one, two and three digits across stages, agents, blocked flags, and
    text that JSON output must escape (a bidi override, DEL)."""
    tmp = tmp_path_factory.mktemp("stream")
    stories = Stories(tmp / "root")
    for n, stage in ((2, "1_backlog"), (10, "1_backlog"), (1, "2_current"), (100, "2_current"),
                     (3, "4_merge"), (20, "1_backlog"), (7, "4_merge")):
        stories.write(stage, f"{n}_story_s{n}", name=f"Story {n} \u202e\x7f",
                      agent="coder-1" if n % 2 else None, blocked=n % 3 == 0)
    db = tmp / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()
    return stories.root, db


def whole(db: Path, **filters: object) -> str:
    """What the non-streamed path printed: the sorted list, whole."""
    conn = open_read_only(db)
    try:
        items = sort_stories(queries.list_stories(conn, **filters), "stage")  # type: ignore[arg-type]
    finally:
        conn.close()
    runner = CliRunner()
    with runner.isolation() as (out, _err, _):
        print_json(items)
        return out.getvalue().decode()


@pytest.mark.parametrize("args", [[], ["--stage", "1_backlog"], ["--agent", "coder-1"],
                                  ["--blocked"], ["--stage", "4_merge", "--not-blocked"]])
def test_streamed_equals_the_whole_list(built: tuple[Path, Path], args: list[str]) -> None:
    root, db = built
    result = CliRunner().invoke(main, ["ls", "--json", "--root", str(root), "--db", str(db),
                                       *args])
    assert result.exit_code == 0, result.stderr
    filters: dict[str, object] = {}
    if "--stage" in args:
        filters["stage"] = args[args.index("--stage") + 1]
    if "--agent" in args:
        filters["agent"] = "coder-1"
    if "--blocked" in args:
        filters["blocked"] = True
    if "--not-blocked" in args:
        filters["blocked"] = False
    assert result.stdout == whole(db, **filters)
    assert "\\u202e" in result.stdout and "\u202e" not in result.stdout


def test_limit_and_an_empty_list(built: tuple[Path, Path]) -> None:
    root, db = built
    where = ["--root", str(root), "--db", str(db)]
    limited = CliRunner().invoke(main, ["ls", "--json", "--limit", "2", *where]).stdout
    everything = whole(db).splitlines()  # "[", a line per story, "]"
    assert limited.splitlines() == [everything[0], everything[1], everything[2].rstrip(","),
                                    "]"]
    empty = CliRunner().invoke(main, ["ls", "--json", "--agent", "nobody", *where]).stdout
    assert empty == "[]\n"


def test_chunks_join_into_one_document() -> None:
    """Every chunk size gives print_json's text exactly."""
    items = [{"id": f"{n}_x", "name": "n\u202e"} for n in range(7)]
    runner = CliRunner()
    with runner.isolation() as (out, _err, _):
        print_json(items)
        expected = out.getvalue().decode()
    for chunk in (1, 2, 3, 7, 100):
        with runner.isolation() as (out, _err, _):
            print_json_stream(iter(items), chunk=chunk)
            assert out.getvalue().decode() == expected, chunk
