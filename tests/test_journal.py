"""Log levels as journal priorities: `<N>` before each line when stderr is the journal.

journald's `SyslogLevelPrefix=` (on by default) strips a leading `<N>` and files
the line at priority N. Here stderr is a plain file whose device and inode are
put in `$JOURNAL_STREAM`, which is how the daemon tells that systemd connected
stderr to the journal; tests/test_real_systemd.py reads the real journal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import STAGES

LOG_EACH_LEVEL = """
from pipelined.logs import configure_logging, get_logger
configure_logging("json", "debug")
log = get_logger("t")
log.debug("a.debug"); log.info("a.info"); log.warning("a.warning"); log.error("a.error")
"""


def run_with_stderr(tmp_path: Path, args: list[str], journal: str | None) -> list[str]:
    """`args` with stderr in a file; JOURNAL_STREAM = that file ("same"), another
    file ("other") or unset (None). The lines written to stderr."""
    err = tmp_path / "stderr"
    other = tmp_path / "other"
    other.touch()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err.open("w") as stream:
        if journal is not None:
            st = os.fstat(stream.fileno()) if journal == "same" else other.stat()
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run(args, stderr=stream, stdout=subprocess.DEVNULL, env=env, timeout=60,
                       check=False)
    return err.read_text(encoding="utf-8").splitlines()


def test_each_level_gets_its_syslog_priority(tmp_path: Path) -> None:
    """debug 7, info 6, warning 4, error 3; no timestamp (journald keeps its own)."""
    lines = run_with_stderr(tmp_path, [sys.executable, "-c", LOG_EACH_LEVEL], "same")
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>"], lines
    events = [json.loads(line[3:]) for line in lines]
    assert [e["event"] for e in events] == ["a.debug", "a.info", "a.warning", "a.error"]
    assert all("timestamp" not in e for e in events)


def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    """A JOURNAL_STREAM inherited by a process whose stderr went elsewhere (a pipe, a
    file) names another file: plain JSON lines with a timestamp, as with none."""
    for journal in ("other", None):
        lines = run_with_stderr(tmp_path, [sys.executable, "-c", LOG_EACH_LEVEL], journal)
        assert len(lines) == 4 and all(line.startswith("{") for line in lines), lines
        assert all("timestamp" in json.loads(line) for line in lines)


def test_the_error_line_of_a_command_is_priority_error(tmp_path: Path) -> None:
    """The one `Error:` line a failing command leaves (what a failed unit shows)."""
    lines = run_with_stderr(tmp_path, [sys.executable, "-m", "pipelined", "ls", "--db",
                                       str(tmp_path / "none.db")], "same")
    assert len(lines) == 1 and lines[0].startswith("<3>Error: "), lines


def test_a_daemon_that_cannot_start_exits_78_when_a_restart_cannot_help(
        tmp_path: Path) -> None:
    """A damaged database: `run` exits 78 (RestartPreventExitStatus= in the units), with
    one line at priority error; a read command on it keeps exit 1."""
    root = tmp_path / "stories"
    for stage in STAGES:
        (root / stage).mkdir(parents=True)
    db = tmp_path / "bad.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)  # a header, then garbage
    err = tmp_path / "stderr"
    with err.open("w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        done = subprocess.run([sys.executable, "-m", "pipelined", "run", "--root", str(root),
                               "--db", str(db)], stderr=stream, env=env, timeout=60,
                              check=False)
    lines = err.read_text(encoding="utf-8").splitlines()
    assert done.returncode == 78, lines
    errors = [line for line in lines if line.startswith(("<3>", "<2>"))]
    assert len(errors) == 1 and "Error: " in errors[0] and str(db) in errors[0], lines
    read = subprocess.run([sys.executable, "-m", "pipelined", "ls", "--db", str(db)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert read.returncode == 1, read.stderr


def test_a_bad_setting_exits_78_and_a_missing_root_does_not(tmp_path: Path) -> None:
    """A bad setting waits for a person (78); a missing root folder may come back
    (a mount not yet up), so that stays 1 and systemd may restart."""
    root = tmp_path / "stories"
    for stage in STAGES:
        (root / stage).mkdir(parents=True)
    bad = subprocess.run([sys.executable, "-m", "pipelined", "run", "--root", str(root),
                          "--db", str(tmp_path / "x.db"), "--settle-ms", "-5"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 78 and bad.stderr.startswith("Error: bad setting"), bad.stderr
    missing = subprocess.run([sys.executable, "-m", "pipelined", "run", "--root",
                              str(tmp_path / "nowhere"), "--db", str(tmp_path / "y.db")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: "), missing.stderr
