"""The read commands and the user-facing errors, through the real CLI."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DaemonProcess, Stories

from pipelined import entry
from pipelined.cli import main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd, check=False)


@pytest.fixture
def populated(stories: Stories, daemon: DaemonProcess) -> DaemonProcess:
    stories.write("1_backlog", "1_story_a", name="Alpha", agent="coder-1")
    stories.write("2_current", "2_story_b", name="Beta", agent="coder-2", blocked=True,
                  depends_on=[1])
    stories.write("2_current", "3_bug_c", name="Gamma", agent="coder-1", retry_count=2)
    return daemon


class TestReadCommandsWhileRunning:
    def test_ls_json_and_filters(self, populated: DaemonProcess) -> None:
        """`ls` lists stories; --stage, --agent and --blocked filter; --json has the fields."""
        populated.start()
        items = json.loads(populated.cli("ls", "--json", check=True).stdout)
        assert [i["id"] for i in items] == ["1_story_a", "2_story_b", "3_bug_c"]
        beta = items[1]
        assert beta == {**beta, "stage": "2_current", "name": "Beta", "agent": "coder-2",
                        "blocked": True, "depends_on": [1], "retry_count": 0}
        ids = lambda *a: [i["id"] for i in json.loads(populated.cli("ls", "--json", *a).stdout)]  # noqa: E731
        assert ids("--stage", "2_current") == ["2_story_b", "3_bug_c"]
        assert ids("--agent", "coder-1") == ["1_story_a", "3_bug_c"]
        assert ids("--blocked") == ["2_story_b"]
        assert ids("--not-blocked") == ["1_story_a", "3_bug_c"]
        table = populated.cli("ls", check=True).stdout
        assert "Gamma" in table and table.splitlines()[0].split()[:2] == ["ID", "STAGE"]

    def test_show(self, populated: DaemonProcess, stories: Stories) -> None:
        """`show` prints fields and content; a bare number finds the story."""
        populated.start()
        story = json.loads(populated.cli("show", "3_bug_c", "--json", check=True).stdout)
        assert story["retry_count"] == 2
        assert story["content"] == stories.path("2_current", "3_bug_c").read_text()
        assert story["files"] == [{"path": "2_current/3_bug_c.md", "winner": True}]
        text = populated.cli("show", "3", check=True).stdout
        assert "Gamma" in text and "Body text." in text

    def test_status_and_doctor(self, populated: DaemonProcess) -> None:
        """`status` sees the running daemon; `doctor` finds nothing wrong."""
        populated.start()
        status = json.loads(populated.cli("status", "--json", check=True).stdout)
        assert status["running"] is True
        assert status["pid"] == populated.proc.pid  # type: ignore[union-attr]
        assert status["stages"] == {"1_backlog": 1, "2_current": 2}
        assert status["last_sync"]
        doctor = populated.cli("doctor", "--json")
        assert doctor.returncode == 0, doctor.stdout
        assert json.loads(doctor.stdout)["ok"] is True


class TestReadCommandsStopped:
    def test_commands_work_with_the_daemon_stopped(self, populated: DaemonProcess) -> None:
        """With the daemon stopped, ls/show/status/doctor still read the database."""
        populated.start()
        assert populated.stop() == 0
        assert len(json.loads(populated.cli("ls", "--json", check=True).stdout)) == 3
        assert json.loads(populated.cli("status", "--json", check=True).stdout)["running"] is False
        populated.cli("show", "1_story_a", check=True)
        assert populated.cli("doctor").returncode == 0

    def test_doctor_sees_drift_while_stopped(self, populated: DaemonProcess,
                                             stories: Stories) -> None:
        """A file changed while the daemon is stopped is drift until the next start."""
        populated.start()
        assert populated.stop() == 0
        stories.write("1_backlog", "9_story_new")
        result = populated.cli("doctor", "--json")
        assert result.returncode == 1
        drift = json.loads(result.stdout)["drift"]
        assert {"path": "1_backlog/9_story_new.md", "problem": "file not in the database"} in drift
        populated.start()
        assert populated.cli("doctor").returncode == 0


class TestErrors:
    def test_unknown_id(self, populated: DaemonProcess) -> None:
        """An unknown id is one line on stderr and exit 1."""
        populated.start()
        result = populated.cli("show", "404_nope")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == ["Error: no story '404_nope'"]

    def test_missing_root(self, tmp_path: Path) -> None:
        """`run` on a missing root: one line, non-zero exit, no traceback."""
        result = run_cli("run", "--root", str(tmp_path / "nope"), "--db", str(tmp_path / "x.db"))
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1
        assert "no such folder" in result.stderr and "Traceback" not in result.stderr

    def test_missing_stage_folder(self, tmp_path: Path) -> None:
        """`run` with a stage folder missing: one line naming it."""
        (tmp_path / "1_backlog").mkdir()
        result = run_cli("run", "--root", str(tmp_path), "--db", str(tmp_path / "x.db"))
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"Error: {tmp_path / '2_current'}: stage folder is missing (create it, or set "
            "--stages; watched: 1_backlog,2_current,4_merge)"]

    def test_missing_database(self, tmp_path: Path) -> None:
        """A read command on a database that does not exist: one line."""
        result = run_cli("ls", "--root", str(tmp_path), "--db", str(tmp_path / "none.db"))
        assert result.returncode == 1
        assert result.stderr.startswith("Error: database ")
        assert len(result.stderr.strip().splitlines()) == 1

    def test_not_a_database(self, tmp_path: Path) -> None:
        """A file that is not SQLite: one line, no traceback."""
        bogus = tmp_path / "bogus.db"
        bogus.write_bytes(b"this is not sqlite" * 100)
        result = run_cli("status", "--db", str(bogus))
        assert result.returncode == 1
        assert "Error: database" in result.stderr and "Traceback" not in result.stderr

    def test_bad_config_file(self, tmp_path: Path) -> None:
        """A bad value in the config file names the field and the value."""
        config = tmp_path / "config.toml"
        config.write_text('settle_ms = "soon"\n')
        result = run_cli("ls", "--config", str(config), "--db", str(tmp_path / "x.db"))
        assert result.returncode == 2
        assert result.stderr.strip() .startswith("Error: bad setting settle_ms='soon'")

    def test_bad_environment_value(self, tmp_path: Path) -> None:
        """A bad PIPELINED_* value names the field."""
        result = subprocess.run(
            [sys.executable, "-m", "pipelined", "ls", "--db", str(tmp_path / "x.db")],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                 "PIPELINED_STAGES": "backlog"},
        )
        assert result.returncode == 2
        assert "bad setting stages='backlog'" in result.stderr

    def test_second_daemon_is_refused(self, populated: DaemonProcess, tmp_path: Path) -> None:
        """A second daemon on the same database exits non-zero naming the holder's pid."""
        populated.start()
        result = run_cli("run", "--root", str(populated.root), "--db", str(populated.db))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: database {populated.db} is held by a running pipelined "
            f"(pid {populated.proc.pid})"]  # type: ignore[union-attr]

    def test_lock_survives_sigkill(self, populated: DaemonProcess) -> None:
        """After a SIGKILL the next start succeeds: the kernel dropped the lock."""
        populated.start()
        populated.kill()
        populated.start()
        assert populated.stop() == 0


class TestHelp:
    @pytest.mark.parametrize("command", ["run", "status", "ls", "show", "doctor", "new", "move",
                                         "init", "board", "search", "log",
                                         "events", "stats"])
    def test_every_command_has_help_and_an_example(self, command: str) -> None:
        """`--help` on each command says what it does and shows an example."""
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Example: pipelined" in result.output

    def test_every_command_is_in_the_readme_and_the_reference(self) -> None:
        """Each command has its line in the README and its entry in docs/commands.md."""
        root = Path(__file__).parents[1]
        readme = (root / "README.md").read_text()
        reference = (root / "docs" / "commands.md").read_text()
        for command in main.commands:
            assert f"pipelined {command}" in readme, command
            assert f"| `pipelined {command}" in reference, command


def test_entry_point_starts_with_the_garbage_collector_off(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The console script's entry runs the command group with the cyclic collector
    off (startup builds objects it keeps); the daemon turns it back on itself."""
    monkeypatch.setattr(sys, "argv", ["pipelined", "--version"])
    was_enabled = gc.isenabled()
    try:
        with pytest.raises(SystemExit) as exited:
            entry.main()
        assert exited.value.code == 0
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()
    assert "pipelined" in capsys.readouterr().out
