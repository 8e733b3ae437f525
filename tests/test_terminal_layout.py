"""What people see on a terminal: tables that fit its width (cut cells end in `…`,
wide characters count as two cells), times relative to now; into a pipe, every cell
whole and times as stored. Commands run in a real pseudo-terminal of 80 and 200
columns."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import Stories

from pipelined.commands.output import cell_width, cut


def in_terminal(args: list[str], columns: int, cwd: Path) -> str:
    """`pipelined ARGS` with stdout on a pty `columns` wide; what it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIPELINED_") and k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "pipelined", *args], stdout=slave,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=cwd,
                            env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def root(stories: Stories) -> Path:
    stories.write("1_backlog", "14_story_export_the_board_as_csv_for_the_weekly_report",
                  name="Export the board as CSV for the weekly report of the whole team")
    stories.write("2_current", "10_story_login", name="Log in with a magic link",
                  agent="coder-1", retry_count=1)
    stories.write("2_current", "11_story_emoji",  # the characters themselves, not \u escapes
                  "---\nname: 絵文字のタイトル 🎉 がずれない\nagent: coder-2\nblocked: true\n"
                  "retry_count: 0\n---\n")
    done = subprocess.run([sys.executable, "-m", "pipelined", "rebuild"], cwd=stories.root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return stories.root


@pytest.fixture(autouse=True)
def _state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The database of the root found from the current folder, in the test's own place."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_ls_fits_80_columns(root: Path) -> None:
    lines = in_terminal(["ls"], 80, root).splitlines()
    assert lines == [
        "ID                    STAGE      NAME                  AGENT    BLOCKED  RETRIES",
        "14_story_export_the…  1_backlog  Export the board as…                    0",
        "10_story_login        2_current  Log in with a magic…  coder-1           1",
        "11_story_emoji        2_current  絵文字のタイトル 🎉…  coder-2  yes      0",
    ]
    assert all(cell_width(line) <= 80 for line in lines)


def test_ls_at_200_columns_and_into_a_pipe_is_whole(root: Path) -> None:
    wide = in_terminal(["ls"], 200, root).splitlines()
    piped = subprocess.run([sys.executable, "-m", "pipelined", "ls"], cwd=root,
                           capture_output=True, text=True, timeout=60, check=True)
    assert wide == piped.stdout.splitlines()
    assert "Export the board as CSV for the weekly report of the whole team" in wide[1]
    assert "14_story_export_the_board_as_csv_for_the_weekly_report" in wide[1]
    # Columns line up in cells: the agent column starts at the same cell on every row.
    starts = {cell_width(line[:line.index("coder")]) for line in wide if "coder" in line}
    assert len(starts) == 1


def test_times_are_relative_on_a_terminal_only(root: Path) -> None:
    shown = in_terminal(["show", "10"], 80, root)
    assert "created_at:   just now" in shown and "blocked:      no" in shown
    logged = in_terminal(["log"], 80, root).splitlines()
    assert logged[0].split() == ["SEQ", "WHEN", "ID", "WHAT"] and "just now" in logged[1]
    piped = subprocess.run([sys.executable, "-m", "pipelined", "log"], cwd=root,
                           capture_output=True, text=True, timeout=60, check=True)
    assert "just now" not in piped.stdout and "Z  " in piped.stdout


def test_cut() -> None:
    assert cut("abcdef", 6) == "abcdef" and cut("abcdef", 4) == "abc…"
    assert cut("絵文字です", 5) == "絵文…" and cell_width(cut("絵文字です", 6)) <= 6


def test_search_snippets_come_from_the_body_and_are_bold_on_a_terminal(
        root: Path, stories: Stories) -> None:
    """A word in the front matter and the body: the snippet is the body's, the match
    bold (SGR 1 ... 22) on a terminal, `**match**` into a pipe; story text with an
    escape sequence stays escaped either way."""
    stories.write("1_backlog", "30_story_mailer", "---\nname: Mailer\nagent: magic-bot\n---\n"
                  "# Mailer\n\nSend the magic link. \x1b[31mred\n")
    subprocess.run([sys.executable, "-m", "pipelined", "rebuild"], cwd=root,
                   capture_output=True, timeout=60, check=True)
    shown = in_terminal(["search", "magic"], 80, root).splitlines()
    snippet = shown[shown.index(next(s for s in shown if s.startswith("30_story_mailer"))) + 1]
    assert snippet == "    # Mailer Send the \x1b[1mmagic\x1b[22m link. \\x1b[31mred"
    piped = subprocess.run([sys.executable, "-m", "pipelined", "search", "magic"], cwd=root,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "    # Mailer Send the **magic** link. \\x1b[31mred" in piped.splitlines()
    assert "agent" not in piped  # the front matter is not the snippet


def test_story_text_cannot_bold_or_split_the_search_output(root: Path,
                                                           stories: Stories) -> None:
    """A name with U+2028 (str.splitlines splits there) and a body holding the private
    characters the terminal's bold is made from: no crash, no escape sequence from the
    story, on a terminal and into a pipe."""
    stories.write("1_backlog", "31_story_sep", "---\nname: \"one\u2028two zebra\"\n---\n"
                  "zebra \ue000 text \ue001 after\n")
    subprocess.run([sys.executable, "-m", "pipelined", "rebuild"], cwd=root,
                   capture_output=True, timeout=60, check=True)
    shown = in_terminal(["search", "zebra"], 80, root)
    assert shown.count("\x1b[1m") == 1 and shown.count("\x1b[22m") == 1, repr(shown)
    assert "one\\u2028two zebra" in shown
    piped = subprocess.run([sys.executable, "-m", "pipelined", "search", "zebra"], cwd=root,
                           capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == 0, piped.stderr
    # Into a pipe the marks are `**`; the private characters are only text there.
    assert "    **zebra** \ue000 text \ue001 after" in piped.stdout.splitlines()
