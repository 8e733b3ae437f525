"""Every way an editor saves a story file, done for real against the running daemon.

Each test performs one editor's save pattern (real vim and real sed where they
are installed, faithful syscall replays of vim, emacs, atomic savers and
JetBrains otherwise) and ends with:

- the row's content equal to the file and its fields typed from the new text;
- no leftover (`~`, `.swp`, `4913`, `.#…`, `#…#`, `___jb_…___`, temp files)
  ever becoming a row: a `RowSpy` thread polls the table all along;
- the story never seen as delete + create: the row never disappears while the
  editor works, `created_at` is kept, and the log holds no `story.deleted` and
  no second `story.created` for that id;
- `doctor` clean: no parse error left over, no drift between files and rows.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DaemonProcess, Stories, folder_matches_db, story_text, wait_until
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

VIM = "/usr/bin/vim"
needs_vim = pytest.mark.skipif(not os.path.exists(VIM), reason=f"{VIM} is not installed")
needs_sed = pytest.mark.skipif(shutil.which("sed") is None, reason="sed is not installed")

STORY = "42_story_login"
BYSTANDER = "43_story_logout"
STAGE = "2_current"

BEFORE: dict[str, Any] = {"name": "Log in", "agent": None, "retry_count": 1,
                          "blocked": False, "depends_on": [3]}
AFTER: dict[str, Any] = {"name": "Log in with SSO", "agent": "coder-2", "retry_count": 2,
                         "blocked": True, "depends_on": [3, 7]}
BODY_BEFORE = "As a user I want to log in.\n\n- [ ] form\n- [ ] session\n"
BODY_AFTER = "As a user I want to log in with SSO.\n\n- [x] form\n- [ ] session\n"


# -- checking the database -----------------------------------------------------------



def text_or_none(path: Path) -> str | None:
    """The file's text, or None while an editor has it renamed away."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None

def fields_of(row: dict[str, Any]) -> dict[str, Any]:
    """The five story fields of a row, typed as in the front matter."""
    return {
        "name": row["name"],
        "agent": row["agent"],
        "retry_count": row["retry_count"],
        "blocked": None if row["blocked"] is None else bool(row["blocked"]),
        "depends_on": None if row["depends_on"] is None else json.loads(row["depends_on"]),
    }


def story_events(daemon: DaemonProcess, story_id: str, event: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == event and e.get("id") == story_id]


def assert_same_story(daemon: DaemonProcess, story_id: str, before: dict[str, Any]) -> None:
    """The story kept its identity: never deleted, never created a second time."""
    row = daemon.row(story_id)
    assert row is not None
    assert row["created_at"] == before["created_at"]
    assert row["updated_at"] >= before["updated_at"]
    assert story_events(daemon, story_id, "story.deleted") == []
    assert len(story_events(daemon, story_id, "story.created")) <= 1


def wait_synced(stories: Stories, daemon: DaemonProcess, story_id: str, path: Path,
                fields: dict[str, Any]) -> dict[str, Any]:
    """Wait until the row holds the file's text and these fields; return the row."""
    text = path.read_text(encoding="utf-8")
    row = daemon.wait_row(story_id, lambda r: r["content"] == text and fields_of(r) == fields)
    wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")
    wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")
    return row


class RowSpy:
    """Polls the ids in `pipeline_items` from a thread while an editor works.

    Records whether `story_id` was ever missing, every id outside `allowed`
    ever seen, and every distinct content of `story_id`.
    """

    def __init__(self, daemon: DaemonProcess, story_id: str, allowed: set[str]) -> None:
        self.db = daemon.db
        self.story_id = story_id
        self.allowed = allowed
        self.polls = 0
        self.missing = 0
        self.strangers: set[str] = set()
        self.contents: list[str | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            conn = apsw.Connection(str(self.db), flags=apsw.SQLITE_OPEN_READONLY)
            conn.set_busy_timeout(5000)
            try:
                while not self._stop.is_set():
                    rows = dict(conn.execute("SELECT id, content FROM pipeline_items"))
                    self.polls += 1
                    if self.story_id not in rows:
                        self.missing += 1
                    elif not self.contents or self.contents[-1] != rows[self.story_id]:
                        self.contents.append(rows[self.story_id])
                    self.strangers |= set(rows) - self.allowed
                    self._stop.wait(0.004)
            finally:
                conn.close()
        except BaseException as exc:  # reported by check()
            self.error = exc

    def __enter__(self) -> RowSpy:
        self._thread.start()
        wait_until(lambda: self.polls > 0 or self.error, what="the row spy's first poll")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def check(self) -> None:
        assert self.error is None, self.error
        assert self.polls > 1
        assert self.missing == 0, f"{self.story_id} vanished from the table in {self.missing} polls"
        assert self.strangers == set(), f"leftovers became rows: {sorted(self.strangers)}"


class FolderEvents:
    """What inotify reports in one folder, seen from the test (watchdog, not the daemon)."""

    def __init__(self, folder: Path) -> None:
        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        handler = FileSystemEventHandler()
        handler.on_any_event = self._record  # type: ignore[method-assign]
        self.observer = Observer()
        self.observer.schedule(handler, str(folder), recursive=False)

    def _record(self, event: FileSystemEvent) -> None:
        dest = os.path.basename(os.fsdecode(event.dest_path)) if event.dest_path else ""
        with self._lock:
            self.events.append((event.event_type, os.path.basename(os.fsdecode(event.src_path)),
                                dest))

    def saw(self, kind: str, name: str | Callable[[str], bool], dest: str = "") -> bool:
        match = name if callable(name) else (lambda n: n == name)
        with self._lock:
            return any(k == kind and match(s) and (not dest or d == dest)
                       for k, s, d in self.events)

    def wait_saw(self, kind: str, name: str | Callable[[str], bool], dest: str = "") -> None:
        wait_until(lambda: self.saw(kind, name, dest), timeout=10,
                   what=f"inotify {kind} {name} {dest}: {self.events}")

    def __enter__(self) -> FolderEvents:
        self.observer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.observer.stop()
        self.observer.join(5)


@contextmanager
def editing(stories: Stories, daemon: DaemonProcess, **before: Any
            ) -> Iterator[tuple[Path, dict[str, Any], RowSpy]]:
    """A running daemon with the story (and an untouched bystander) in the database.

    Yields the story's path, its row before the edit, and a running RowSpy.
    """
    fields = {**BEFORE, **before}
    path = stories.write(STAGE, STORY, story_text(**fields, body=BODY_BEFORE))
    stories.write("1_backlog", BYSTANDER, name="Log out", agent="coder-1", retry_count=0,
                  blocked=False, depends_on=[42])
    daemon.start()
    row = daemon.wait_row(STORY)
    assert fields_of(row) == fields
    bystander = daemon.wait_row(BYSTANDER)
    with RowSpy(daemon, STORY, {STORY, BYSTANDER}) as spy:
        yield path, row, spy
    spy.check()
    assert daemon.row(BYSTANDER) == bystander


def after_text(**changes: Any) -> str:
    return story_text(**{**AFTER, **changes}, body=BODY_AFTER)


# -- save patterns, as syscalls ------------------------------------------------------


def write_fsync(path: Path, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                ) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def vim_save(path: Path, text: str, keep_backup: bool = False) -> None:
    """vim's `:w` with backupcopy=auto and writebackup, as strace shows it.

    Probe `4913` (O_EXCL, then unlinked), rename f -> f~, create f, write,
    fsync, then delete f~ (kept with 'backup' set).
    """
    folder = path.parent
    probe = folder / "4913"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    os.unlink(probe)
    backup = folder / f"{path.name}~"
    os.rename(path, backup)
    write_fsync(path, text.encode(), os.O_WRONLY | os.O_CREAT)
    if not keep_backup:
        os.unlink(backup)


def emacs_first_save(path: Path, text: str) -> None:
    """Emacs' first save of a session: rename f -> f~, create f, write (no fsync)."""
    os.rename(path, path.with_name(f"{path.name}~"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, text.encode())
    os.close(fd)


def atomic_save(path: Path, text: str, temp_name: str) -> None:
    """Write a temp file in the same folder, fsync, os.replace over f, fsync the folder."""
    temp = path.with_name(temp_name)
    write_fsync(temp, text.encode(), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.replace(temp, path)
    fsync_dir(path.parent)


def jetbrains_save(path: Path, text: str) -> None:
    """JetBrains safe write: f___jb_tmp___, f -> f___jb_old___, tmp -> f, delete old."""
    temp = path.with_name(f"{path.name}___jb_tmp___")
    old = path.with_name(f"{path.name}___jb_old___")
    write_fsync(temp, text.encode(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.rename(path, old)
    os.rename(temp, path)
    os.unlink(old)


def in_place_save(path: Path, text: str) -> None:
    """Truncate and write the same inode (nano, VS Code's default, `echo >`)."""
    write_fsync(path, text.encode(), os.O_WRONLY | os.O_TRUNC)


# -- vim ----------------------------------------------------------------------------


def vim_command(path: Path, *ex: str, swap: bool = False) -> list[str]:
    """vim in silent Ex mode, no vimrc, no viminfo.

    'backupskip' is emptied: its default skips backups for anything under
    /tmp, where the tests run, and real users' files are not there.
    """
    args = [VIM, "-u", "NONE", "-i", "NONE", "-N", "-e", "-s"]
    if not swap:
        args.append("-n")
    for command in ex:
        args += ["-c", command]
    return [*args, str(path)]


EDIT_TO_AFTER = (
    '%s/^name: .*/name: "Log in with SSO"/',
    '%s/^agent: null$/agent: "coder-2"/',
    "%s/^retry_count: 1$/retry_count: 2/",
    "%s/^blocked: false$/blocked: true/",
    "%s/^depends_on: .*/depends_on: [3, 7]/",
    "%s/want to log in\\./want to log in with SSO./",
    "%s/- \\[ \\] form/- [x] form/",
)


class TestVim:
    @needs_vim
    @pytest.mark.parametrize("backup", ["backup", "nobackup"])
    def test_real_vim_ex_mode(self, stories: Stories, daemon: DaemonProcess,
                              tmp_path: Path, backup: str) -> None:
        """Real vim `:wq` (backupcopy=auto, writebackup): probe 4913, f -> f~, new f.

        With 'backup' the f~ stays on disk (and is ignored, also by the startup
        stat pass after a restart); with 'nobackup' vim deletes it after the write.
        """
        with editing(stories, daemon) as (path, before, _spy), \
                FolderEvents(path.parent) as seen:
            subprocess.run(vim_command(path, f"set {backup} writebackup backupcopy=auto "
                                             "backupskip=", *EDIT_TO_AFTER, "wq"),
                           cwd=tmp_path, stdin=subprocess.DEVNULL, check=True, timeout=30)
            assert path.read_text() == after_text()
            seen.wait_saw("created", "4913")
            seen.wait_saw("deleted", "4913")
            seen.wait_saw("moved", path.name, f"{path.name}~")
            seen.wait_saw("created", path.name)
            if backup == "nobackup":
                seen.wait_saw("deleted", f"{path.name}~")
            row = wait_synced(stories, daemon, STORY, path, AFTER)
        assert (path.parent / f"{path.name}~").exists() == (backup == "backup")
        assert row["stage"] == STAGE
        assert_same_story(daemon, STORY, before)
        assert daemon.stop() == 0
        daemon.start()
        assert set(daemon.rows()) == {STORY, BYSTANDER}
        assert daemon.row(STORY) == row

    @needs_vim
    def test_real_vim_backupcopy_yes(self, stories: Stories, daemon: DaemonProcess,
                                     tmp_path: Path) -> None:
        """Real vim with backupcopy=yes: f copied to f~, f rewritten in place (same inode)."""
        with editing(stories, daemon) as (path, before, _spy), \
                FolderEvents(path.parent) as seen:
            inode = path.stat().st_ino
            subprocess.run(vim_command(path, "set nobackup writebackup backupcopy=yes "
                                             "backupskip=", *EDIT_TO_AFTER, "wq"),
                           cwd=tmp_path, stdin=subprocess.DEVNULL, check=True, timeout=30)
            assert path.read_text() == after_text()
            assert path.stat().st_ino == inode
            seen.wait_saw("created", f"{path.name}~")
            seen.wait_saw("deleted", f"{path.name}~")
            wait_synced(stories, daemon, STORY, path, AFTER)
        assert_same_story(daemon, STORY, before)

    @needs_vim
    def test_real_vim_with_swap_file_while_another_edit_happens(
        self, stories: Stories, daemon: DaemonProcess, tmp_path: Path
    ) -> None:
        """vim holds `.f.swp` open for the whole session; another story is edited and a
        new one created meanwhile; vim's `:w` and `:q` later. Nothing of the swap shows."""
        with editing(stories, daemon) as (path, before, spy), \
                FolderEvents(path.parent) as seen:
            swap = path.with_name(f".{path.name}.swp")
            vim = subprocess.Popen(
                vim_command(path, "set nobackup writebackup backupcopy=auto backupskip=",
                            swap=True),
                cwd=tmp_path, stdin=subprocess.PIPE)
            try:
                assert vim.stdin is not None
                wait_until(swap.exists, what="vim's swap file")
                for command in EDIT_TO_AFTER:
                    vim.stdin.write(f"{command}\n".encode())
                vim.stdin.write(b"preserve\n")  # force the swap file to be written now
                vim.stdin.flush()

                # Meanwhile, another edit in the same folder and a new story.
                other = stories.path(STAGE, "44_story_profile")
                other.write_text(story_text(name="Profile", agent="coder-3", retry_count=0,
                                            blocked=False, depends_on=[42]))
                spy.allowed.add("44_story_profile")
                daemon.wait_row("44_story_profile",
                                lambda r: r["content"] == other.read_text())
                in_place_save(other, story_text(name="Profile page", agent="coder-3",
                                                retry_count=1, blocked=True,
                                                depends_on=[42, 43]))
                daemon.wait_row("44_story_profile", lambda r: r["name"] == "Profile page")
                assert swap.exists() and vim.poll() is None
                assert daemon.row(STORY)["content"] == path.read_text()  # type: ignore[index]
                assert path.read_text() == story_text(**BEFORE, body=BODY_BEFORE)

                vim.stdin.write(b"w\n")
                vim.stdin.flush()
                # vim renames the original away before writing the new file: polled
                # between the two, the path is briefly missing.
                wait_until(lambda: text_or_none(path) == after_text(), what="vim's write")
                wait_synced(stories, daemon, STORY, path, AFTER)
                assert swap.exists() and vim.poll() is None
                vim.stdin.write(b"q\n")
                vim.stdin.close()
                assert vim.wait(30) == 0
            finally:
                if vim.poll() is None:
                    vim.kill()
                    vim.wait(30)
                if vim.stdin is not None and not vim.stdin.closed:
                    vim.stdin.close()
            assert not swap.exists()
            seen.wait_saw("created", f".{path.name}.swp")
            seen.wait_saw("deleted", f".{path.name}.swp")
            seen.wait_saw("moved", path.name, f"{path.name}~")
            seen.wait_saw("deleted", f"{path.name}~")
            wait_synced(stories, daemon, STORY, path, AFTER)
        assert_same_story(daemon, STORY, before)
        assert fields_of(daemon.row("44_story_profile")) == {  # type: ignore[arg-type]
            "name": "Profile page", "agent": "coder-3", "retry_count": 1, "blocked": True,
            "depends_on": [42, 43]}

    @pytest.mark.parametrize("keep_backup", [False, True], ids=["writebackup", "backup"])
    def test_vim_syscall_replay_with_swap(self, stories: Stories, daemon: DaemonProcess,
                                          keep_backup: bool) -> None:
        """The replay of vim's write with `.f.swp` (and a `.f.swx`) present the whole time."""
        with editing(stories, daemon) as (path, before, _spy):
            swap = path.with_name(f".{path.name}.swp")
            swx = path.with_name(f".{path.name}.swx")  # a second session's swap name
            write_fsync(swap, b"b0VIM 9.0\0" + bytes(4086))
            write_fsync(swx, b"b0VIM 9.0\0" + bytes(4086))
            write_fsync(swap, b"b0VIM 9.0\0" + b"\x01" * 4086)  # vim updates its swap
            vim_save(path, after_text(), keep_backup=keep_backup)
            row = wait_synced(stories, daemon, STORY, path, AFTER)
            assert swap.exists() and swx.exists()
            os.unlink(swx)
            os.unlink(swap)  # vim quits
            wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor after quit")
        assert path.with_name(f"{path.name}~").exists() == keep_backup
        assert row["content"] == after_text()
        assert_same_story(daemon, STORY, before)


# -- sed -----------------------------------------------------------------------------


class TestSed:
    @needs_sed
    def test_sed_in_place(self, stories: Stories, daemon: DaemonProcess,
                          tmp_path: Path) -> None:
        """`sed -i` writes a temp `sedXXXXXX` beside the file and renames it over f."""
        with editing(stories, daemon) as (path, before, _spy), \
                FolderEvents(path.parent) as seen:
            subprocess.run(["sed", "-i",
                            "-e", 's/^name: .*/name: "Log in with SSO"/',
                            "-e", 's/^agent: null$/agent: "coder-2"/',
                            "-e", "s/^retry_count: 1$/retry_count: 2/",
                            "-e", "s/^blocked: false$/blocked: true/",
                            "-e", "s/^depends_on: .*/depends_on: [3, 7]/",
                            "-e", "s/want to log in\\./want to log in with SSO./",
                            "-e", "s/- \\[ \\] form/- [x] form/",
                            str(path)], cwd=tmp_path, check=True, timeout=30)
            assert path.read_text() == after_text()
            seen.wait_saw("moved", lambda n: n.startswith("sed"), path.name)
            wait_synced(stories, daemon, STORY, path, AFTER)
        assert_same_story(daemon, STORY, before)
        # The file was replaced atomically: one update, naming exactly what changed.
        updates = story_events(daemon, STORY, "story.updated")
        assert [u["fields"] for u in updates] == [sorted(AFTER)]

    @needs_sed
    def test_sed_edits_one_field(self, stories: Stories, daemon: DaemonProcess,
                                 tmp_path: Path) -> None:
        """A one-field `sed -i` changes that field only (and the content)."""
        with editing(stories, daemon) as (path, before, _spy):
            subprocess.run(["sed", "-i", "s/^blocked: false$/blocked: true/", str(path)],
                           cwd=tmp_path, check=True, timeout=30)
            wait_synced(stories, daemon, STORY, path, {**BEFORE, "blocked": True})
        assert_same_story(daemon, STORY, before)
        assert [u["fields"] for u in story_events(daemon, STORY, "story.updated")] == [
            ["blocked"]]


# -- emacs ---------------------------------------------------------------------------


class TestEmacs:
    def test_emacs_replay(self, stories: Stories, daemon: DaemonProcess) -> None:
        """Emacs: lock symlink `.#f` and auto-save `#f#` while editing; the first save
        renames f -> f~ and writes a new f; the lock goes later; a second save in
        the same session writes in place."""
        with editing(stories, daemon) as (path, before, _spy):
            folder = path.parent
            lock = folder / f".#{path.name}"
            autosave = folder / f"#{path.name}#"
            os.symlink(f"tester@buildhost.{os.getpid()}:1732600000", lock)
            write_fsync(autosave, after_text().encode())  # auto-save of the buffer
            emacs_first_save(path, after_text())
            os.unlink(autosave)  # a save removes the auto-save file
            row = wait_synced_with_lock(stories, daemon, path, AFTER)
            assert lock.is_symlink() and not lock.exists()  # dangling, as emacs makes it
            os.unlink(lock)  # the buffer is unmodified again

            # Second save of the session: a lock again, then a plain in-place write.
            os.symlink(f"tester@buildhost.{os.getpid()}:1732600000", lock)
            in_place_save(path, after_text(agent="coder-4"))
            wait_synced_with_lock(stories, daemon, path, {**AFTER, "agent": "coder-4"})
            os.unlink(lock)
            wait_synced(stories, daemon, STORY, path, {**AFTER, "agent": "coder-4"})
        assert path.with_name(f"{path.name}~").read_text() == story_text(**BEFORE,
                                                                         body=BODY_BEFORE)
        assert row["created_at"] == before["created_at"]
        assert_same_story(daemon, STORY, before)
        assert daemon.stop() == 0
        daemon.start()
        assert set(daemon.rows()) == {STORY, BYSTANDER}


def wait_synced_with_lock(stories: Stories, daemon: DaemonProcess, path: Path,
                          fields: dict[str, Any]) -> dict[str, Any]:
    """Like wait_synced, while a dangling `.#f.md` lock is there (folder_matches_db
    would try to read it)."""
    text = path.read_text(encoding="utf-8")
    row = daemon.wait_row(STORY, lambda r: r["content"] == text and fields_of(r) == fields)
    wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")
    assert set(daemon.rows()) == {STORY, BYSTANDER}
    return row


# -- atomic save and JetBrains -------------------------------------------------------


class TestAtomicSave:
    @pytest.mark.parametrize("temp_name", [
        f".{STORY}.md.tmp12345",  # hidden temp (VS Code's saveAtomic, many libraries)
        f"{STORY}.md.tmp",  # plain `.tmp` suffix
        f"{STORY}.md.4f1c2a.tmp",  # random part, then `.tmp`
    ])
    def test_temp_fsync_replace(self, stories: Stories, daemon: DaemonProcess,
                                temp_name: str) -> None:
        """Temp file in the same folder, fsync, os.replace over f: one update, no delete."""
        with editing(stories, daemon) as (path, before, _spy):
            inode = path.stat().st_ino
            atomic_save(path, after_text(), temp_name)
            assert path.stat().st_ino != inode
            row = wait_synced(stories, daemon, STORY, path, AFTER)
        assert not path.with_name(temp_name).exists()
        assert row["content"] == after_text()
        assert_same_story(daemon, STORY, before)
        assert [u["fields"] for u in story_events(daemon, STORY, "story.updated")] == [
            sorted(AFTER)]

    def test_temp_file_lingering_before_replace(self, stories: Stories,
                                                daemon: DaemonProcess) -> None:
        """A temp file that sits there through a flush (slow fsync) never becomes a row."""
        with editing(stories, daemon) as (path, before, spy):
            temp = path.with_name(f"{path.name}.tmp")
            write_fsync(temp, after_text().encode())
            # A new story makes the daemon flush while the temp file exists.
            spy.allowed.add("45_story_signup")
            stories.write("1_backlog", "45_story_signup", name="Sign up", agent=None,
                          retry_count=0, blocked=False, depends_on=None)
            daemon.wait_row("45_story_signup")
            assert temp.exists()
            assert set(daemon.rows()) == {STORY, BYSTANDER, "45_story_signup"}
            os.replace(temp, path)
            wait_synced(stories, daemon, STORY, path, AFTER)
        assert_same_story(daemon, STORY, before)


class TestJetBrains:
    def test_safe_write(self, stories: Stories, daemon: DaemonProcess) -> None:
        """f___jb_tmp___ written, f -> f___jb_old___, tmp -> f, old deleted."""
        with editing(stories, daemon) as (path, before, _spy), \
                FolderEvents(path.parent) as seen:
            jetbrains_save(path, after_text())
            seen.wait_saw("moved", f"{path.name}___jb_tmp___", path.name)
            row = wait_synced(stories, daemon, STORY, path, AFTER)
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        assert row["content"] == after_text()
        assert_same_story(daemon, STORY, before)
        assert [u["fields"] for u in story_events(daemon, STORY, "story.updated")] == [
            sorted(AFTER)]


class TestWindowsEditors:
    @pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["crlf", "bom-crlf"])
    def test_crlf_save(self, stories: Stories, daemon: DaemonProcess, bom: bytes) -> None:
        """Notepad-style text (CRLF, maybe a byte order mark) saved atomically: the row
        holds the text exactly as on disk, CRs and BOM included, and the fields parse."""
        with editing(stories, daemon) as (path, before, _spy):
            data = bom + after_text().replace("\n", "\r\n").encode()
            temp = path.with_name(f"{path.name}.tmp")
            write_fsync(temp, data)
            os.replace(temp, path)
            row = daemon.wait_row(STORY, lambda r: r["content"] == data.decode("utf-8"))
            wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")
        assert fields_of(row) == AFTER
        assert_same_story(daemon, STORY, before)


# -- slow writer and rapid saves -----------------------------------------------------


class TestSlowWriter:
    @pytest.mark.parametrize("pause", [0.03, 0.25], ids=["pauses-under-settle",
                                                          "pauses-over-settle"])
    def test_truncate_and_write_in_chunks(self, stories: Stories, daemon: DaemonProcess,
                                          pause: float) -> None:
        """Truncate f, then write it in chunks split mid front matter with pauses between.

        With pauses longer than the settle time the daemon sees half-written
        files (empty, broken YAML); it must still end with the whole text, the
        right fields and no parse error left, and never delete the story.
        """
        with editing(stories, daemon) as (path, before, spy):
            data = after_text().encode()
            cuts = [0, 9, 40, 75, 110, len(data)]
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                for start, end in itertools.pairwise(cuts):
                    time.sleep(pause)  # deliberate: a slow writer
                    os.write(fd, data[start:end])
            finally:
                os.close(fd)
            assert path.read_bytes() == data
            row = wait_synced(stories, daemon, STORY, path, AFTER)
        assert row["content"] == after_text()
        assert_same_story(daemon, STORY, before)
        if pause > 0.1:
            # The test really made the daemon look at half-written files.
            partial = [c for c in spy.contents if c not in (before["content"], after_text())]
            assert partial, spy.contents

    def test_half_written_file_does_not_undo_the_reset_retry_count(
        self, stories: Stories, daemon: DaemonProcess
    ) -> None:
        """A slow writer after a move: retry_count (reset to 0 by the move, 1 in the file
        before and after the save) stays 0 once the save is complete.

        The writer waits until the daemon has stored the half-written file, so the
        daemon certainly sees it (as it does with any writer slower than the settle time).
        """
        with editing(stories, daemon) as (path, before, _spy):
            moved = stories.path("4_merge", STORY)
            os.rename(path, moved)
            daemon.wait_row(STORY, lambda r: r["stage"] == "4_merge" and r["retry_count"] == 0)
            data = story_text(**{**BEFORE, "name": "Log in, renamed"}, body=BODY_BEFORE).encode()
            fd = os.open(moved, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, data[:20])  # '---\nname: "Log in, r'
                daemon.wait_row(STORY, lambda r: r["content"] == data[:20].decode())
                os.write(fd, data[20:])
            finally:
                os.close(fd)
            row = daemon.wait_row(STORY, lambda r: r["content"] == data.decode())
            wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")
        assert_same_story(daemon, STORY, before)
        assert row["name"] == "Log in, renamed"
        assert row["retry_count"] == 0


def save_with(style: str, path: Path, text: str, n: int) -> None:
    if style == "in-place":
        in_place_save(path, text)
    elif style == "atomic":
        atomic_save(path, text, f".{path.name}.tmp{n}")
    elif style == "vim":
        vim_save(path, text)
    elif style == "jetbrains":
        jetbrains_save(path, text)
    elif style == "emacs":
        emacs_first_save(path, text)
    else:
        raise AssertionError(style)


SAVE_STYLES = ["in-place", "atomic", "vim", "jetbrains", "emacs"]


def nth_fields(n: int) -> dict[str, Any]:
    return {"name": f"Log in, take {n}", "agent": f"coder-{n % 3}", "retry_count": n,
            "blocked": n % 2 == 1, "depends_on": list(range(1, n % 4 + 2))}


class TestOnlyChangedFields:
    @pytest.mark.parametrize("style", SAVE_STYLES)
    def test_save_after_a_move_keeps_the_reset_retry_count(
        self, stories: Stories, daemon: DaemonProcess, style: str
    ) -> None:
        """After `mv` to another stage reset retry_count to 0, an editor's save that
        changes only the name leaves retry_count at 0 (the file's 1 did not change)."""
        with editing(stories, daemon) as (path, before, _spy):
            moved = stories.path("4_merge", STORY)
            os.rename(path, moved)
            daemon.wait_row(STORY, lambda r: r["stage"] == "4_merge" and r["retry_count"] == 0)
            save_with(style, moved, story_text(**{**BEFORE, "name": "Log in, renamed"},
                                               body=BODY_BEFORE), 0)
            row = daemon.wait_row(STORY, lambda r: r["name"] == "Log in, renamed")
            wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to files")
            wait_until(lambda: daemon.cli("doctor").returncode == 0, what="doctor to be clean")
        assert fields_of(row) == {**BEFORE, "name": "Log in, renamed", "retry_count": 0}
        assert row["stage"] == "4_merge"
        assert_same_story(daemon, STORY, before)
        assert story_events(daemon, STORY, "story.updated")[-1]["fields"] == ["name"]


class TestRapidSaves:
    @pytest.mark.parametrize("style", SAVE_STYLES)
    def test_twenty_saves_in_a_row(self, stories: Stories, daemon: DaemonProcess,
                                   style: str) -> None:
        """20 saves back to back end with the last content and fields."""
        with editing(stories, daemon) as (path, before, _spy):
            for n in range(20):
                save_with(style, path, story_text(**nth_fields(n), body=f"Take {n}.\n"), n)
            row = wait_synced(stories, daemon, STORY, path, nth_fields(19))
        assert row["content"] == story_text(**nth_fields(19), body="Take 19.\n")
        assert_same_story(daemon, STORY, before)

    @pytest.mark.parametrize("style", SAVE_STYLES)
    def test_twenty_saves_across_flushes(self, stories: Stories, daemon: DaemonProcess,
                                         style: str) -> None:
        """20 saves a person makes, some within the settle time and some after a flush:
        every flush lands between two saves, and the end is the last save."""
        with editing(stories, daemon) as (path, before, spy):
            for n in range(20):
                save_with(style, path, story_text(**nth_fields(n), body=f"Take {n}.\n"), n)
                time.sleep((0.02, 0.09, 0.15, 0.11)[n % 4])  # deliberate: a person's rhythm
            row = wait_synced(stories, daemon, STORY, path, nth_fields(19))
        assert row["content"] == story_text(**nth_fields(19), body="Take 19.\n")
        assert_same_story(daemon, STORY, before)
        assert len(spy.contents) > 2  # the daemon saw saves in between, not just the last
