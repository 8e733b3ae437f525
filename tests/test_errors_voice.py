"""Errors in the tool's own voice: the option or setting, the value, what would be
valid; one line; click's own messages included."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import Stories

from pipelined.cli import main


@pytest.fixture
def root(stories: Stories) -> Path:
    stories.write("1_backlog", "10_story_login", name="Login")
    return stories.root


@pytest.mark.parametrize(("args", "line"), [
    (["ls", "--sort", "bogus"], "Error: bad value for --sort: 'bogus' is not one of 'stage', "
     "'id', 'name', 'updated', 'created' (see `pipelined ls --help`)"),
    (["ls", "--limit", "x"], "Error: bad value for --limit: 'x' is not a whole number "
     "(see `pipelined ls --help`)"),
    (["ls", "--limit", "0"], "Error: bad value for --limit: 0 is not from 1 to "
     "9223372036854775807 (see `pipelined ls --help`)"),
    # Beyond SQLite's integers: one line, not an OverflowError's traceback.
    (["ls", "--limit", str(2**63)], "Error: bad value for --limit: 9223372036854775808 is "
     "not from 1 to 9223372036854775807 (see `pipelined ls --help`)"),
    (["search", "x", "--limit", str(2**63)], "Error: bad value for --limit: "
     "9223372036854775808 is not from 1 to 9223372036854775807 (see `pipelined search "
     "--help`)"),
    (["log", "--limit", str(2**64)], "Error: bad value for --limit: 18446744073709551616 is "
     "not from 1 to 9223372036854775807 (see `pipelined log --help`)"),
    (["events", "--since", str(2**63)], "Error: bad value for --since: 9223372036854775808 "
     "is not from 0 to 9223372036854775807 (see `pipelined events --help`)"),
    (["log", "--since", "yesterday"], "Error: bad value for --since: 'yesterday' is not a "
     "date or time; expected a date such as 2026-11-29 or an RFC 3339 time such as "
     "2026-11-29T09:30:00Z (see `pipelined log --help`)"),
    (["show"], "Error: missing argument 'STORY_ID' (see `pipelined show --help`)"),
    (["ls", "--bogus"], "Error: no such option '--bogus' (see `pipelined ls --help`)"),
    (["nosuch"], "Error: no such command 'nosuch' (see `pipelined --help`)"),
])
def test_a_bad_command_line_is_one_line_in_our_words(root: Path, args: list[str],
                                                     line: str) -> None:
    result = CliRunner().invoke(main, [*args, "--root", str(root)] if args != ["nosuch"]
                                else args)
    assert result.exit_code == 2
    assert result.stderr == line + "\n"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("SETTLE_MS", "abc", "expected a whole number"),
    ("SETTLE_MS", "1.5", "expected a whole number"),
    ("RESCAN_INTERVAL_S", "soon", "expected a number of seconds"),
])
def test_a_bad_setting_names_it_the_value_and_the_kind(
        root: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str,
        expected: str) -> None:
    """No Python text (`invalid literal for int() with base 10`) reaches the user."""
    monkeypatch.setenv(f"PIPELINED_{name}", value)
    result = CliRunner().invoke(main, ["ls", "--root", str(root)])
    assert result.exit_code == 2
    assert result.stderr == (f"Error: bad setting {name.lower()}={value!r}: {expected}\n")
