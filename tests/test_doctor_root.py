"""`pipelined doctor` compares the folders with the database: it needs the folders.

A root or stage folder that is missing is one `Error:` line and exit 1, the
way `pipelined run` reports it, never an "ok" from comparing nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Stories


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home"})


@pytest.fixture
def db(stories: Stories, tmp_path: Path) -> Path:
    """A database built from the folders by the real import code (`pipelined rebuild`)."""
    stories.write("1_backlog", "1_story_a", name="A")
    stories.write("2_current", "2_story_b", name="B")
    path = tmp_path / "state" / "pipeline.db"
    built = cli("rebuild", "--root", str(stories.root), "--db", str(path))
    assert built.returncode == 0, built.stderr
    assert cli("doctor", "--root", str(stories.root), "--db", str(path)).returncode == 0
    return path


class TestDoctorNeedsTheFolders:
    def test_missing_root_is_one_error_line(self, db: Path, tmp_path: Path) -> None:
        """A root that does not exist: exit 1 and the line `run` prints, not "ok"."""
        missing = tmp_path / "nonexistent"
        result = cli("doctor", "--root", str(missing), "--db", str(db))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: {missing}: no such folder (set --root or PIPELINED_ROOT)"]
        assert result.stdout == ""

    def test_missing_root_with_json(self, db: Path, tmp_path: Path) -> None:
        """--json gives no report either: the same one line on stderr, exit 1."""
        missing = tmp_path / "nonexistent"
        result = cli("doctor", "--json", "--root", str(missing), "--db", str(db))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"Error: {missing}: no such folder")

    def test_root_that_is_a_file(self, db: Path, tmp_path: Path) -> None:
        """A root that is a file, not a folder: one line, exit 1."""
        not_a_folder = tmp_path / "file"
        not_a_folder.write_text("x")
        result = cli("doctor", "--root", str(not_a_folder), "--db", str(db))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: {not_a_folder}: no such folder (set --root or PIPELINED_ROOT)"]

    def test_missing_stage_folder_is_one_error_line(self, db: Path, stories: Stories) -> None:
        """An empty stage folder removed: one line naming it, not "ok" for a folder that
        is not there."""
        (stories.root / "4_merge").rmdir()
        result = cli("doctor", "--root", str(stories.root), "--db", str(db))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: {stories.root.resolve() / '4_merge'}: stage folder is missing (create it, "
            "or set --stages; watched: 1_backlog,2_current,4_merge)"]
