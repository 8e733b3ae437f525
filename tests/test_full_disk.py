"""Writes of new files on a nearly full disk: every byte written and synced, or
an error and nothing left behind.

A real full disk needs root (a small tmpfs, see test_faults.py). RLIMIT_FSIZE
gives the same kernel behaviour deterministically and without root: a write
crossing the limit is cut short (as on a nearly full disk), the next one fails
(EFBIG, with SIGXFSZ ignored). The programs run as real subprocesses with that
limit set; the test process itself keeps no limit.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import STAGES, Stories, modes_bind_prefix

from pipelined.authoring import CLAIM_PREFIX
from pipelined.schema import MAX_TEXT
from pipelined.store.lock import holder, lock_path
from pipelined.story import parse_story

LIMIT = 900  # bytes any file of the subprocess may reach


def limit_file_size(limit: int) -> Callable[[], None]:
    """A preexec_fn: files of the child stop growing at `limit` bytes.

    It makes two system calls and takes no lock, so it is safe in the forked
    child even if the test process had threads (PLW1509).
    """
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc writes under the limit
    env.pop("PIPELINED_CONFIG", None)
    return env


def new_story(stories: Stories, db: Path, title: str, prefix: tuple[str, ...] = (),
              limit: int = LIMIT) -> subprocess.CompletedProcess[str]:
    """`pipelined new TITLE` with RLIMIT_FSIZE set to `limit`."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "pipelined", "new", title, "--root", str(stories.root),
         "--db", str(db)],
        capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=limit_file_size(limit), env=child_env())


def left_behind(stories: Stories) -> list[str]:
    """Every file in the stage folders, and every claim file in the root."""
    found = [f"{stage}/{p.name}" for stage in STAGES for p in (stories.root / stage).iterdir()]
    return found + [p.name for p in stories.root.iterdir() if p.name.startswith(CLAIM_PREFIX)]


def long_title() -> str:
    """A title that makes the story file larger than LIMIT (it is written twice in full)."""
    title = "Make the export page handle every column" + " and yet another column" * 20
    assert len(title.encode()) * 2 > LIMIT and len(title) <= MAX_TEXT
    return title


class TestNewOnAFullDisk:
    def test_a_cut_write_is_an_error_and_leaves_nothing(self, stories: Stories,
                                                        tmp_path: Path) -> None:
        """A story file larger than what the disk takes: the first write is cut
        short, the next fails; exit 1 with one `Error:` line, and no story file,
        temporary file or number claim is left (before: exit 0, a file cut at
        the limit)."""
        result = new_story(stories, tmp_path / "none.db", long_title())
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"Error: {stories.root / '1_backlog'}: cannot write a "
                                   "story file (File too large)"), lines[0]
        assert result.stdout == ""
        assert left_behind(stories) == []

    def test_a_story_that_fits_is_written_whole(self, stories: Stories, tmp_path: Path) -> None:
        """Under the same limit, a normal-size story is written complete and exits 0."""
        result = new_story(stories, tmp_path / "none.db", "Export as CSV")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "1_story_export_as_csv\n"
        assert left_behind(stories) == ["1_backlog/1_story_export_as_csv.md"]
        parsed = parse_story(stories.path("1_backlog", "1_story_export_as_csv").read_bytes(),
                             1 << 20)
        assert parsed.errors == () and parsed.fields["name"] == "Export as CSV"

    def test_the_long_story_fits_without_the_limit(self, stories: Stories,
                                                   tmp_path: Path) -> None:
        """The same long title with room enough: the whole file, front matter intact
        (so the failure above is the limit's, not the title's)."""
        title = long_title()
        result = new_story(stories, tmp_path / "none.db", title, limit=1 << 20)
        assert result.returncode == 0, result.stderr
        path = stories.root / "1_backlog" / f"{result.stdout.strip()}.md"
        assert path.stat().st_size > LIMIT
        assert parse_story(path.read_bytes(), 1 << 20).fields["name"] == title


@pytest.fixture
def unreadable_stage(stories: Stories) -> Iterator[Path]:
    """The first stage folder without read permission: names can be added to it
    (write and search), but it cannot be opened, so it cannot be synced."""
    folder = stories.root / "1_backlog"
    folder.chmod(0o311)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


class TestNewFolderSync:
    def test_a_folder_that_cannot_be_synced_is_an_error(
            self, stories: Stories, tmp_path: Path, unreadable_stage: Path) -> None:
        """The link is made but the stage folder cannot be synced, so the new name
        might not survive a power cut: exit 1 with one `Error:` line, and the
        story file is removed again (before: exit 0 without the sync)."""
        prefix = modes_bind_prefix()
        if prefix is None:
            pytest.skip("as root, needs setpriv to drop CAP_DAC_OVERRIDE")
        result = new_story(stories, tmp_path / "none.db", "Export as CSV", prefix=prefix)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0] == (f"Error: {unreadable_stage}: cannot write a story file "
                            "(Permission denied)")
        unreadable_stage.chmod(0o755)
        assert left_behind(stories) == []


LOCK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipelined.store.lock import DaemonLock

    DaemonLock(Path(sys.argv[1])).acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin
""")


class TestLockFileOnAFullDisk:
    def test_a_cut_pid_leaves_the_lock_file_empty(self, tmp_path: Path) -> None:
        """Room for 2 bytes of the pid: the lock is still taken (the kernel's lock
        is what counts) and the file is left empty rather than naming a wrong
        pid (before: the first 2 digits of the pid)."""
        db = tmp_path / "pipeline.db"
        proc = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(db)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_env(),
                                preexec_fn=limit_file_size(2))  # noqa: PLW1509 - see there
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "locked\n", proc.stderr
            assert holder(db) == proc.pid
            pid_line = f"{proc.pid}\n".encode()
            assert Path(lock_path(db)).read_bytes() == (b"" if len(pid_line) > 2 else pid_line)
        finally:
            proc.stdin.close()
            proc.wait(30)
            proc.stdout.close()
            assert proc.stderr is not None
            proc.stderr.close()
        assert proc.returncode == 0


class TestMoveNeverReplaces:
    def test_a_file_made_in_the_target_meanwhile_is_not_replaced(self, tmp_path: Path) -> None:
        """The rename of a move never replaces a file of the same name in the target
        stage (made by a racing `move`): FileExistsError, both files kept."""
        from pipelined.durable import rename_no_replace

        source = tmp_path / "a.md"
        target = tmp_path / "b.md"
        source.write_text("moving")
        target.write_text("already there")
        with pytest.raises(FileExistsError):
            rename_no_replace(source, target)
        assert (source.read_text(), target.read_text()) == ("moving", "already there")
        target.unlink()
        rename_no_replace(source, target)
        assert target.read_text() == "moving" and not source.exists()
