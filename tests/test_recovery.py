"""Integrity at startup, `pipelined rebuild`, `pipelined backup`, a read-only database."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import apsw
import pytest
from conftest import DaemonProcess, Stories, folder_matches_db, modes_bind_prefix, needs_modes

from pipelined.errors import EXIT_NEEDS_A_PERSON


def corrupt_pages(db: Path, *names: str) -> None:
    """Overwrite the root page of pipeline_items, or of the tables and indexes named
    (the file header stays valid), as a damaged disk sector would; the others stay
    readable."""
    conn = apsw.Connection(str(db))
    roots = [conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                          (name,)).fetchone()[0] for name in names or ("pipeline_items",)]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as handle:
        for root_page in roots:
            handle.seek((root_page - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))


@pytest.fixture
def synced(stories: Stories, daemon: DaemonProcess) -> DaemonProcess:
    """A stopped daemon whose database holds 40 stories; 900 was deleted."""
    for n in range(40):
        stories.write(("1_backlog", "2_current", "4_merge")[n % 3], f"{n + 1}_story_s",
                      name=f"story {n}", body="text " * 300)
    stories.write("1_backlog", "900_story_gone")
    daemon.start()
    stories.path("1_backlog", "900_story_gone").unlink()
    daemon.wait_gone("900_story_gone")
    assert daemon.stop() == 0
    return daemon


class TestIntegrity:
    def test_corrupt_pages_give_one_line_naming_rebuild(self, synced: DaemonProcess) -> None:
        """quick_check at startup catches damaged pages: one line, exit 78 (no restart
        can help), names rebuild."""
        corrupt_pages(synced.db)
        assert synced.spawn().wait(30) == EXIT_NEEDS_A_PERSON
        last = synced.log_tail(1)
        assert last.startswith(f"Error: database {synced.db}: ")
        assert "pipelined rebuild" in last

    def test_damaged_file_signatures_give_the_same_line(self, synced: DaemonProcess) -> None:
        """The stored signatures are read by the start's survey, before the check runs:
        their damage is the same one line and exit 78, not a traceback."""
        corrupt_pages(synced.db, "file_signatures")
        assert synced.spawn().wait(30) == EXIT_NEEDS_A_PERSON
        last = synced.log_tail(1)
        assert last.startswith(f"Error: database {synced.db}: ")
        assert "pipelined rebuild" in last
        assert "Traceback" not in synced.log_tail(100)
        assert synced.stop() == EXIT_NEEDS_A_PERSON  # collects what it told systemd
        assert any("STOPPING=1" in m for m in synced.messages)  # its watches stopped too

    def test_garbage_file_gives_one_line_naming_rebuild(self, synced: DaemonProcess) -> None:
        """A file that is not SQLite at all: the same one line."""
        synced.db.write_bytes(b"not a database " * 1000)
        for suffix in ("-wal", "-shm"):
            synced.db.with_name(synced.db.name + suffix).unlink(missing_ok=True)
        assert synced.spawn().wait(30) == 1
        assert "pipelined rebuild" in synced.log_tail(1)

    @pytest.mark.parametrize("command", [("ls",), ("show", "3"), ("board",)])
    def test_read_commands_on_damaged_pages_give_one_line(self, synced: DaemonProcess,
                                                          command: tuple[str, ...]) -> None:
        """A read command whose query hits a damaged page: one `Error:` line, exit 1,
        no traceback. (The lists read only their indexes: those are damaged too.)"""
        corrupt_pages(synced.db, "pipeline_items", "pipeline_items_order",
                      "pipeline_items_in_stage")
        result = synced.cli(*command)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr

    def test_rebuild_recovers_and_keeps_numbers(self, synced: DaemonProcess,
                                                stories: Stories) -> None:
        """rebuild makes a fresh database from the folders, keeps the old file and the
        high-water mark (900 stays used although its story is gone)."""
        corrupt_pages(synced.db)
        result = synced.cli("rebuild", "--json", check=True)
        report = json.loads(result.stdout)
        assert report["stories"] == 40
        assert report["high_water"] == 900
        assert Path(report["old_db"]).exists()
        synced.start()
        assert folder_matches_db(stories, synced)
        assert synced.query("SELECT high_water FROM story_numbers") == [(900,)]
        assert synced.cli("doctor").returncode == 0

    def test_rebuild_refused_while_the_daemon_runs(self, synced: DaemonProcess) -> None:
        """rebuild needs the daemon stopped: one line naming its pid."""
        synced.start()
        result = synced.cli("rebuild")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"Error: database {synced.db} is held by a running pipelined "
            f"(pid {synced.proc.pid})"]  # type: ignore[union-attr]


class TestBackup:
    def test_backup_while_running_then_restore(self, synced: DaemonProcess, stories: Stories,
                                               tmp_path: Path) -> None:
        """A backup taken while edits land is consistent; a daemon starts on it."""
        synced.start()
        for n in range(20):
            stories.write("2_current", f"{n + 100}_story_during", name=f"during {n}")
        copy = tmp_path / "backup.db"
        result = synced.cli("backup", str(copy), "--json", check=True)
        assert json.loads(result.stdout)["bytes"] > 0
        assert synced.stop() == 0
        restored = DaemonProcess(stories.root, copy, tmp_path / "restored")
        (tmp_path / "restored").mkdir()
        try:
            restored.start()
            assert folder_matches_db(stories, restored)
            assert restored.cli("doctor").returncode == 0
            assert restored.stop() == 0
        finally:
            restored.kill()

    def test_backup_refuses_an_existing_file(self, synced: DaemonProcess,
                                             tmp_path: Path) -> None:
        """An existing target is never overwritten: one line, exit 1."""
        target = tmp_path / "exists.db"
        target.write_text("keep me")
        result = synced.cli("backup", str(target))
        assert result.returncode == 1
        assert result.stderr.strip() == f"Error: database {target}: already exists; " \
                                        "choose a new file name"
        assert target.read_text() == "keep me"


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
class TestReadOnlyDatabase:
    def test_read_only_database_is_refused_at_startup(self, synced: DaemonProcess) -> None:
        """A database file that cannot be written: one line, instead of a silent READY."""
        if subprocess.run(["chattr", "+i", str(synced.db)], capture_output=True,
                          check=False).returncode != 0:
            pytest.skip("this file system does not support the immutable attribute")
        try:
            assert synced.spawn().wait(30) == 1
            assert "read-only" in synced.log_tail(1) or "readonly" in synced.log_tail(1)
            assert synced.log_tail(1).startswith("Error: database")
        finally:
            subprocess.run(["chattr", "-i", str(synced.db)], check=False)


@needs_modes
class TestDatabaseMadeReadOnly:
    def test_read_only_while_running_then_restart(self, synced: DaemonProcess,
                                                  stories: Stories) -> None:
        """The database file turned read-only under a running daemon (permissions
        applying): it keeps committing through its open descriptor and loses
        nothing; a restart is then refused with one line instead of a silent READY."""
        synced.prefix = list(modes_bind_prefix() or ())
        synced.start()
        synced.db.chmod(0o444)
        try:
            stories.write("2_current", "77_story_after_chmod", name="still saved")
            synced.wait_row("77_story_after_chmod", lambda r: r["name"] == "still saved")
            assert synced.stop() == 0
            assert synced.spawn().wait(30) == 1
            assert synced.log_tail(1).startswith(f"Error: database {synced.db}: the database "
                                                 "file is read-only")
        finally:
            # SQLite gives a new -shm the mode of the database file: fix all three,
            # as an administrator would (`chmod 644 pipeline.db*`).
            for path in synced.db.parent.glob(synced.db.name + "*"):
                path.chmod(0o644)
        synced.start()
        assert folder_matches_db(stories, synced)
