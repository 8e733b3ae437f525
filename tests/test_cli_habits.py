"""The CLI fits people's habits: bare `pipelined` is help, `-V` the version, Ctrl-C
ends on a new line, and a read on a database nobody keeps up to date says so."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, wait_until

from pipelined import __version__


def pipelined(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd)


def test_bare_pipelined_is_help_and_success() -> None:
    done = pipelined()
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith("Usage: ") and "pipelined [OPTIONS] COMMAND" in done.stdout
    assert "Commands:" in done.stdout


def test_dash_capital_v_is_the_version() -> None:
    for flag in ("-V", "--version"):
        done = pipelined(flag)
        assert (done.returncode, done.stdout) == (0, f"pipelined, version {__version__}\n")


class TestStaleness:
    def test_a_read_without_a_daemon_says_so_on_stderr_only(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        stories.write("1_backlog", "10_story_login", name="Login")
        daemon.start()
        fresh = daemon.cli("ls", "--json")
        assert fresh.stderr == ""  # a ready daemon: nothing to say
        assert daemon.stop() == 0
        for args in (("ls", "--json"), ("show", "10"), ("board",), ("search", "login"),
                     ("log",), ("stats",)):
            stale = daemon.cli(*args)
            assert stale.returncode == 0, stale.stderr
            lines = stale.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                "note: no daemon is running on this database"), (args, stale.stderr)
            assert "(last sync 20" in lines[0]
        assert json.loads(daemon.cli("ls", "--json").stdout) == json.loads(fresh.stdout)
        assert daemon.cli("status").stderr == ""  # status says it in its own words


@pytest.mark.e2e
def test_ctrl_c_on_a_terminal_ends_the_line(stories: Stories, tmp_path: Path) -> None:
    """The daemon on a terminal: Ctrl-C (typed: the terminal echoes `^C` and signals
    the foreground group) is followed by a new line, so the next log line does not
    start as `^C2026-...`; exit 0."""
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINED_", "NOTIFY"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelined", "run", "--root", str(stories.root), "--db",
         str(tmp_path / "p.db")], stdin=slave, stdout=slave, stderr=slave, env=env,
        preexec_fn=controlling_terminal, close_fds=True)  # noqa: PLW1509 - a pty needs it
    os.close(slave)
    output = b""

    def read_some() -> bytes:
        nonlocal output
        if select.select([master], [], [], 0.1)[0]:
            with contextlib.suppress(OSError):  # the child closed its end
                output += os.read(master, 65536)
        return output

    try:
        wait_until(lambda: b"daemon.ready" in read_some(), what="the ready line")
        os.write(master, b"\x03")  # Ctrl-C, through the terminal's line discipline
        assert proc.wait(DEADLINE_S) == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"daemon.stopped" not in read_some():
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = output.decode(errors="replace")
    assert "^C" in text, text
    after = text.split("^C", 1)[1]
    assert after.startswith(("\r\n", "\n")), repr(after[:80])


def complete(words: str, cwd: Path) -> list[str]:
    """What bash completion offers for the last of `words` (click's protocol)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINED_")}
    parts = words.split(" ")
    env.update(COMP_WORDS=words, COMP_CWORD=str(len(parts) - 1),
               _PIPELINED_COMPLETE="bash_complete")
    console = Path(sys.executable).parent / "pipelined"  # the name the shell hook calls
    done = subprocess.run([str(console)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    lines = [line for line in done.stdout.splitlines() if line]
    assert all("," in line for line in lines), done.stdout + done.stderr
    return [line.split(",", 1)[1] for line in lines]


def test_completion_offers_story_ids_and_stages(stories: Stories, tmp_path: Path) -> None:
    """Ids from the database (found from the current folder), stage folders and aliases."""
    stories.write("1_backlog", "10_story_login", name="Login")
    stories.write("2_current", "11_story_export", name="Export")
    stories.write("2_current", "20_bug_crash", name="Crash")
    db = tmp_path / "p.db"
    assert pipelined("rebuild", "--root", str(stories.root), "--db", str(db)).returncode == 0
    cwd = stories.root / "2_current"
    with_db = f"--db {db}"
    assert complete(f"pipelined show {with_db} 1", cwd) == ["10_story_login", "11_story_export"]
    assert complete(f"pipelined move {with_db} 20_bug_crash cu", cwd) == ["current"]
    assert complete(f"pipelined ls {with_db} --stage ", cwd) == [
        "1_backlog", "2_current", "4_merge", "backlog", "current", "merge"]
    assert complete("pipelined show 1", tmp_path) == []  # outside any root: nothing


def test_the_stale_note_also_follows_a_command_that_exits_by_itself(
        stories: Stories, tmp_path: Path) -> None:
    """`doctor` finding drift exits 1 by itself: the note that explains the drift is
    still there; a failing command's `Error:` line stays alone."""
    stories.write("1_backlog", "10_story_login", name="Login")
    db = tmp_path / "p.db"
    assert pipelined("rebuild", "--root", str(stories.root), "--db", str(db)).returncode == 0
    stories.write("1_backlog", "11_story_new", name="Not synced")
    doctor = pipelined("doctor", "--root", str(stories.root), "--db", str(db))
    assert doctor.returncode == 1
    assert doctor.stderr.splitlines()[-1].startswith("note: no daemon is running")
    missing = pipelined("show", "99", "--root", str(stories.root), "--db", str(db))
    assert missing.returncode == 1 and missing.stderr.startswith("Error: ")
    assert "note:" not in missing.stderr


def test_show_gives_the_path_as_stored_when_the_root_is_not_known(
        stories: Stories, tmp_path: Path) -> None:
    stories.write("2_current", "10_story_login", name="Login")
    db = tmp_path / "p.db"
    assert pipelined("rebuild", "--root", str(stories.root), "--db", str(db)).returncode == 0
    inside = pipelined("show", "10", "--db", str(db), cwd=stories.root).stdout.splitlines()
    assert f"path:         {stories.root}/2_current/10_story_login.md" in inside
    elsewhere = pipelined("show", "10", "--db", str(db), cwd=tmp_path).stdout.splitlines()
    assert "path:         2_current/10_story_login.md" in elsewhere


def test_a_bad_command_line_is_one_line_and_78_for_a_service() -> None:
    """`pipelined --bogus` is one line too (it printed click's usage block); a bad flag
    of `run` exits 78, which the units do not restart on."""
    bogus = pipelined("--bogus")
    assert (bogus.returncode, bogus.stderr) == (
        2, "Error: no such option '--bogus' (see `pipelined --help`)\n")
    bad = pipelined("run", "--log-level", "verbose")
    assert bad.returncode == 78 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("Error: bad value for --log-level: 'verbose'")
