"""Stages by folder or alias (the name after the number) in every command, and one
error for a stage that is neither, on a database built by the real import code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Stories

from pipelined.cli import main
from pipelined.config import resolve, resolve_stage
from pipelined.errors import UnknownStage
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild

STAGES = ("1_backlog", "2_current", "4_merge")


@pytest.fixture
def built(tmp_path: Path) -> tuple[Stories, Path]:
    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "10_story_login", name="Login form")
    stories.write("2_current", "11_story_export", name="Export login data")
    stories.write("4_merge", "12_story_search", name="Search")
    db = tmp_path / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()
    return stories, db


def cli(built: tuple[Stories, Path], *args: str) -> tuple[int, str, str]:
    stories, db = built
    result = CliRunner().invoke(main, [*args, "--root", str(stories.root), "--db", str(db)])
    return result.exit_code, result.stdout, result.stderr


def test_alias_rules() -> None:
    assert [resolve_stage(s, STAGES) for s in ("current", "CURRENT", " merge ", "1_backlog",
                                               "1_BACKLOG")] == [
        "2_current", "2_current", "4_merge", "1_backlog", "1_backlog"]
    for bad in ("9_nope", "", "2", "_current"):
        with pytest.raises(UnknownStage):
            resolve_stage(bad, STAGES)


def test_aliases_in_every_command(built: tuple[Stories, Path]) -> None:
    stories, _db = built
    code, out, _err = cli(built, "ls", "--stage", "current", "--json")
    assert code == 0 and [s["id"] for s in json.loads(out)] == ["11_story_export"]
    code, out, _err = cli(built, "search", "login", "--stage", "backlog", "--json")
    assert code == 0 and [h["id"] for h in json.loads(out)] == ["10_story_login"]
    code, out, err = cli(built, "new", "Dark mode", "--stage", "merge", "--json")
    assert code == 0, err
    assert json.loads(out)["stage"] == "4_merge"
    code, out, err = cli(built, "move", "10", "current", "--no-wait", "--json")
    assert code == 0, err
    assert json.loads(out)["to_stage"] == "2_current"
    assert stories.path("2_current", "10_story_login").exists()


@pytest.mark.parametrize("args", [("ls", "--stage", "9_nope"),
                                  ("search", "login", "--stage", "9_nope"),
                                  ("new", "A title", "--stage", "9_nope"),
                                  ("move", "10", "9_nope")])
def test_an_unknown_stage_is_one_error_everywhere(built: tuple[Stories, Path],
                                                  args: tuple[str, ...]) -> None:
    """The same line and exit 1 in every command (ls printed an empty table)."""
    code, out, err = cli(built, *args)
    assert (code, out) == (1, "")
    assert err == ("Error: unknown stage '9_nope' "
                   "(stages: 1_backlog, 2_current, 4_merge)\n")
