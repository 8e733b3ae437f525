"""Writer faults: a full disk and a database locked by another program. The
daemon keeps running, keeps the changes in memory, shows `degraded` in
`status`, and ends with nothing lost once the fault goes. (A read-only
database is refused at startup: see test_recovery.py.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, folder_matches_db, wait_until


def _can_mount_tmpfs(tmp: Path) -> bool:
    probe = tmp / "probe-mount"
    probe.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], check=False)
    return True


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB file system (tmpfs) for the database; unmounted afterwards."""
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def status(daemon: DaemonProcess) -> dict[str, object]:
    return json.loads(daemon.cli("status", "--json", check=True).stdout)  # type: ignore[no-any-return]


def big_story(n: int) -> str:
    return f"---\nname: big {n}\nretry_count: 0\n---\n" + ("lorem ipsum " * 8000) + "\n"


class TestFullDisk:
    def test_full_disk_then_space_again(self, stories: Stories, tmp_path: Path,
                                        small_disk: Path) -> None:
        """SQLITE_FULL: degraded while full, every change committed once space is back."""
        daemon = DaemonProcess(stories.root, small_disk / "pipeline.db", tmp_path)
        try:
            stories.write("1_backlog", "1_story_first", name="first")
            daemon.start()
            filler = small_disk / "filler"
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"],
                           capture_output=True, check=False)  # fills the disk, then fails
            for n in range(2, 12):
                stories.write("2_current", f"{n}_story_big", big_story(n))
            wait_until(lambda: status(daemon)["state"] == "degraded", what="degraded state")
            error = status(daemon)["writer_error"]
            assert isinstance(error, str) and "Full" in error
            assert daemon.proc is not None and daemon.proc.poll() is None
            filler.unlink()
            wait_until(lambda: folder_matches_db(stories, daemon), what="every story committed")
            wait_until(lambda: status(daemon)["state"] == "ready", what="recovered state")
            events = [e["event"] for e in daemon.log_events()]
            assert "writer.commit_failed" in events and "writer.recovered" in events
            assert daemon.stop() == 0
        finally:
            daemon.kill()


    def test_a_disk_full_during_the_first_import_shows_as_degraded(
            self, stories: Stories, tmp_path: Path, small_disk: Path) -> None:
        """The disk is full before the first import can commit: `status` says degraded
        (the heartbeat is written while the daemon starts, its block allocated up
        front), not `starting` for ever; once space is back the import completes."""
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k", "count=80"],
                       capture_output=True, check=True)  # 5 MiB of the 6
        for n in range(1, 31):
            stories.write("2_current", f"{n}_story_big", big_story(n))  # about 3 MB
        daemon = DaemonProcess(stories.root, small_disk / "pipeline.db", tmp_path)
        try:
            daemon.spawn()

            def state() -> object:  # the database may not exist yet
                done = daemon.cli("status", "--json")
                return json.loads(done.stdout)["state"] if done.returncode == 0 else None

            wait_until(lambda: state() == "degraded", what="degraded state")
            assert "READY=1" not in daemon.messages
            filler.unlink()
            daemon.wait_message("READY=1")
            wait_until(lambda: folder_matches_db(stories, daemon), what="every story committed")
            assert daemon.stop() == 0
        finally:
            daemon.kill()


class TestLockedDatabase:
    @pytest.mark.slow  # over about 6 s of wall time: the slow pass
    def test_write_lock_held_by_another_program(self, stories: Stories,
                                                daemon: DaemonProcess) -> None:
        """Another program holds a write transaction: edits wait, then all land."""
        stories.write("1_backlog", "1_story_a", name="before")
        daemon.start()
        other = apsw.Connection(str(daemon.db))
        other.set_busy_timeout(int(DEADLINE_S * 1000))  # the writer may be merging
        other.execute("BEGIN IMMEDIATE")
        try:
            for n in range(5):
                stories.write("2_current", f"{n + 10}_story_locked", name=f"locked {n}")
            stories.write("1_backlog", "1_story_a", name="after")
            wait_until(lambda: status(daemon)["state"] == "degraded", what="degraded state")
            assert "Busy" in str(status(daemon)["writer_error"])
        finally:
            other.execute("ROLLBACK")
            other.close()
        wait_until(lambda: folder_matches_db(stories, daemon), what="every change committed")
        assert daemon.row("1_story_a")["name"] == "after"  # type: ignore[index]
        wait_until(lambda: status(daemon)["state"] == "ready", what="recovered state")
        assert daemon.stop() == 0
