"""Which paths are story files, the id and stage of a path, and the stat pass.

No reads of file contents happen here: the stat pass only lists stage folders
and stats entries, so a restart with nothing changed opens no story file.
"""

from __future__ import annotations

import errno
import os
import re
import stat as stat_mod
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from pipelined.errors import RootError
from pipelined.reading import read_regular_file

__all__ = [
    "ROOT_GONE",
    "FileSignature",
    "RefusedFile",
    "StageDirs",
    "StoryFile",
    "check_readable_stages",
    "check_root",
    "find_git_dir",
    "git_busy",
    "is_story_name",
    "open_story",
    "read_at_most",
    "split_rel_path",
    "stage_problem",
    "stat_pass",
    "stat_signatures",
    "stat_story",
    "story_ref",
    "symlinked_story_ids",
]

# `<number>_<anything>.md`. Hidden files, `#…#`, `.#…`, `4913`, `~`, `.swp`,
# `.tmp` and JetBrains leftovers all fail it: they start with no digit or do not
# end in `.md`. One regex, because the stat pass runs it on every file.
_STORY_FILE = re.compile(r"[0-9]+_[^/\\]*\.md")


class FileSignature(NamedTuple):
    """What a stat tells about a file; a different signature means "read it again".

    A tuple, because the stat pass makes one per story file at every start.
    """

    mtime_ns: int
    size: int
    inode: int


class StoryFile(NamedTuple):
    """One story file found on disk (a NamedTuple: cheap to define and to make)."""

    story_id: str
    stage: str
    path: str  # text, not a Path: the sync makes one per touched id and stage
    signature: FileSignature
    symlink: bool = False  # the file is a symlink (inside the root) to a regular file

    @property
    def rel_path(self) -> str:
        return f"{self.stage}/{self.story_id}.md"


def is_story_name(name: str) -> bool:
    """True for `<number>_<anything>.md` that is no hidden file or editor leftover.

    A name that is not valid UTF-8 (Python hands it over with surrogate escapes)
    is no story: it could be stored neither in SQLite text nor in pycrdt.
    """
    return _STORY_FILE.fullmatch(name) is not None and _is_utf8(name)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def story_ref(root: Path, path: str, stages: Iterable[str]) -> tuple[str, str] | None:
    """(stage, story_id) if `path` is a story file directly in a watched stage folder."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) != 2 or parts[0] not in stages or not is_story_name(parts[1]):
        return None
    return parts[0], parts[1][:-3]


def _inside(root_real: str, path: str | Path) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
ROOT_GONE = "the root folder is gone"  # why a stat pass could not list a stage
OUT_OF_ROOT = "the stage folder is a symlink out of the root"
S_IFMT, S_IFLNK, S_IFREG = 0o170000, stat_mod.S_IFLNK, stat_mod.S_IFREG


def _refuse_out_of_root(root: str | Path, folder: str) -> None:
    """OSError for a stage folder swapped for a symlink out of the root while the
    daemon runs (a start refuses one, see check_root): its stories cannot be read
    (`StageDirs` refuses the folder), so it is unreadable, not a list of them, and
    nothing in it or missing from it is synced until it comes back."""
    if os.path.islink(folder):
        root_real = os.path.realpath(root)
        if os.path.realpath(folder) == root_real or not _inside(root_real, folder):
            raise OSError(errno.EACCES, OUT_OF_ROOT)  # the root itself is no stage either


class RefusedFile(Exception):
    """At open time the path was no regular file inside the root (a FIFO, a device,
    a socket or a symlink out of the root swapped in since the stat): not a story."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: {why}")


# O_PATH opens nothing: no FIFO waits for a writer, no device driver runs.
_PATH_FLAGS = os.O_PATH | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def open_story(path: str, root_real: str) -> int:
    """A descriptor open for reading on the regular file `path` names, inside `root_real`.

    The checks are made on what was opened, never on the path: any stat or
    realpath before an open can be raced by a rename (a story file swapped for
    a FIFO, which would block the open forever, or for a symlink to a file the
    daemon must never read). The path is first opened with O_PATH, which
    follows symlinks but opens no file; that descriptor must be a regular file
    whose real path (/proc/self/fd) lies inside the root; only then is that
    same inode opened for reading, non-blocking. Raises RefusedFile when the
    checks fail, OSError when the path cannot be opened.
    """
    handle = os.open(path, _PATH_FLAGS)
    try:
        if (os.fstat(handle).st_mode & S_IFMT) != S_IFREG:
            raise RefusedFile(path, "not a regular file")
        try:
            real = os.readlink(f"/proc/self/fd/{handle}")
        except OSError as exc:  # no /proc: where the file is cannot be told
            raise OSError(exc.errno, "cannot tell where the file is (/proc/self/fd: "
                          f"{exc.strerror})") from None
        if not (real.startswith(root_real + os.sep) or real == root_real):
            raise RefusedFile(path, "a symlink out of the root")
        return os.open(f"/proc/self/fd/{handle}", _READ_FLAGS)
    finally:
        os.close(handle)


class StageDirs:
    """The stage folders, opened once for a batch of reads and checked on their
    descriptors; story files are opened relative to them.

    This is `open_story`'s check at half its cost (a first import opens every
    file): a folder descriptor whose real path is inside the root cannot be
    redirected by renames, so a file opened in it with O_NOFOLLOW, non-blocking,
    and found to be a regular file by fstat is inside the root. A story file
    that is a symlink (ELOOP) goes through `open_story`, which checks where it
    leads. Owned by one thread; `close()` when the batch is done.
    """

    def __init__(self, root_real: str) -> None:
        self._root_real = root_real
        self._folders: dict[str, int] = {}

    def open(self, stage: str, story_id: str) -> int:
        """A descriptor open for reading on `<stage>/<story_id>.md`; RefusedFile if it
        is no regular file inside the root, OSError if it cannot be opened."""
        name = story_id + ".md"
        try:
            fd = os.open(name, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=self._folder(stage))
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a socket (or a device without its driver)
                raise RefusedFile(os.path.join(stage, name), "not a regular file") from None
            if exc.errno != errno.ELOOP:
                raise
            return open_story(os.path.join(self._root_real, stage, name), self._root_real)
        if (os.fstat(fd).st_mode & S_IFMT) != S_IFREG:
            os.close(fd)
            raise RefusedFile(os.path.join(stage, name), "not a regular file")
        return fd

    def _folder(self, stage: str) -> int:
        fd = self._folders.get(stage)
        if fd is None:
            fd = os.open(os.path.join(self._root_real, stage),
                         os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError as exc:
                os.close(fd)
                raise OSError(exc.errno, "cannot tell where the folder is (/proc/self/fd: "
                              f"{exc.strerror})") from None
            if not real.startswith(self._root_real + os.sep):
                os.close(fd)
                # The folder, not the file: unreadable (kept), never absent (deleted).
                raise OSError(errno.EACCES, OUT_OF_ROOT)
            self._folders[stage] = fd
        return fd

    def close(self) -> None:
        for fd in self._folders.values():
            os.close(fd)
        self._folders.clear()


def stages_out_of_root(root: Path, stages: Iterable[str]) -> frozenset[str]:
    """The stage folders that are symlinks out of the root now (see
    `_refuse_out_of_root`): looked up once per pass, not once per story."""
    refused = set()
    for stage in stages:
        try:
            _refuse_out_of_root(root, os.path.join(root, stage))
        except OSError:
            refused.add(stage)
    return frozenset(refused)


def stat_story(root: Path, stage: str, story_id: str,
               refused: Collection[str] = ()) -> StoryFile | None:
    """Stat one candidate path; None if absent, not a regular file, or a symlink out of root.

    Raises OSError when absence cannot be told (a stage folder that cannot be
    searched, or is in `refused`, see `stages_out_of_root`; an I/O error): the
    story must then not be taken for deleted.
    """
    if stage in refused:
        raise OSError(errno.EACCES, OUT_OF_ROOT)
    path = os.path.join(root, stage, story_id + ".md")
    try:
        st = os.lstat(path)
        link = stat_mod.S_ISLNK(st.st_mode)
        if link:
            if not _inside(os.path.realpath(root), path):
                return None
            st = os.stat(path)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    return StoryFile(story_id, stage, path, FileSignature(st.st_mtime_ns, st.st_size, st.st_ino),
                     link)


def stat_signatures(
    root: Path, stages: Iterable[str], unlistable: dict[str, str] | None = None
) -> dict[str, tuple[int, int, int]]:
    """Every story file in the stage folders: '<stage>/<id>.md' -> (mtime_ns, size, inode).

    A listing and a stat each, no reads. This is the startup hot path (its cost
    is in docs/benchmarks.md): names are stat-ed relative to the open stage
    folder, values are plain tuples (equal to a FileSignature), no Path objects.
    A stage folder that exists but cannot be listed (or its entries not
    stat-ed) is added to `unlistable` with the reason: unreadable is not
    empty, and its stories must not be taken for deleted. So is a stage folder
    found absent while the root itself is gone (moved away or deleted under the
    daemon, which stops on it): its stories were not deleted one by one.
    """
    found: dict[str, tuple[int, int, int]] = {}
    absent = []
    for stage in stages:
        try:
            _stat_stage(root, stage, found)
        except OSError as exc:
            if exc.errno in _ABSENT:
                absent.append(stage)
            elif unlistable is not None:
                unlistable[stage] = exc.strerror or str(exc)
    if absent and unlistable is not None and not os.path.isdir(root):
        for stage in absent:
            unlistable[stage] = ROOT_GONE
    return found


def _stat_stage(root: Path, stage: str, found: dict[str, tuple[int, int, int]]) -> None:
    fullmatch = _STORY_FILE.fullmatch
    lstat = os.lstat
    _refuse_out_of_root(root, os.path.join(root, stage))
    folder = os.open(os.path.join(root, stage), os.O_RDONLY | os.O_DIRECTORY)
    try:
        prefix = stage + "/"
        for name in os.listdir(folder):
            if fullmatch(name) is None or not (name.isascii() or _is_utf8(name)):
                continue
            try:
                st = lstat(name, dir_fd=folder)
                if (st.st_mode & S_IFMT) == S_IFLNK:  # inline tests: 10,000 files
                    if not _inside(os.path.realpath(root), root / stage / name):
                        continue
                    st = os.stat(name, dir_fd=folder)
            except OSError as exc:
                if exc.errno in _ABSENT:
                    continue  # vanished between the listing and the stat, or a loop
                raise
            if (st.st_mode & S_IFMT) == S_IFREG:
                found[prefix + name] = (st.st_mtime_ns, st.st_size, st.st_ino)
    finally:
        os.close(folder)


def stage_problem(root: Path, stage: str) -> str | None:
    """Why the stage folder cannot be listed or searched now, or None if it can
    (or is absent: a missing folder is the stat pass's business, not a problem).

    Cheap (an open and a stat, no listing): the apply thread probes a folder it
    found unreadable every few seconds, and a stat pass follows once it is not.
    """
    folder = os.path.join(root, stage)
    try:
        _refuse_out_of_root(root, folder)
        os.close(os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))  # read
        os.lstat(os.path.join(folder, "."))  # search: resolving "." needs it
    except OSError as exc:
        return None if exc.errno in _ABSENT else (exc.strerror or str(exc))
    return None


def symlinked_story_ids(root: Path, stages: Iterable[str]) -> set[str]:
    """Ids of story files that are symlinks (a listing, no stat: d_type tells)."""
    found: set[str] = set()
    for stage in stages:
        try:
            with os.scandir(os.path.join(root, stage)) as entries:
                found.update(e.name[:-3] for e in entries
                             if e.is_symlink() and is_story_name(e.name))
        except OSError:
            continue
    return found


def split_rel_path(rel_path: str) -> tuple[str, str]:
    """'<stage>/<id>.md' -> (stage, story_id)."""
    stage, _, name = rel_path.partition("/")
    return stage, name[:-3]


def stat_pass(root: Path, stages: Iterable[str]) -> Iterator[StoryFile]:
    """Every story file in the stage folders as StoryFile objects (no reads)."""
    for rel_path, signature in stat_signatures(root, stages).items():
        stage, story_id = split_rel_path(rel_path)
        yield StoryFile(story_id, stage, os.path.join(root, rel_path), FileSignature(*signature))


def _read_small_file(path: Path, limit: int = 4096) -> str:
    """A short text file's stripped text, or "" if it is no regular file or cannot be
    read (`.git` of a worktree: looked at before each delete, by the apply thread)."""
    try:
        return read_regular_file(path, limit).decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def check_root(root: Path, stages: Iterable[str]) -> Path:
    """The absolute root, or RootError if it or a stage folder is missing (or a
    stage folder is a symlink out of the root)."""
    stages = tuple(stages)
    root = root.expanduser()
    if not root.is_dir():
        raise RootError(root, "no such folder (set --root or PIPELINED_ROOT)")
    root = root.resolve()
    for stage in stages:
        folder = root / stage
        if not folder.is_dir():
            raise RootError(folder, "stage folder is missing "
                            f"(create it, or set --stages; watched: {','.join(stages)})")
        check_inside(root, folder)
    return root


def check_inside(root: Path, folder: Path) -> None:
    """RootError if the stage folder is a symlink out of the root, or to the root
    itself (a start, and a command that writes into it, refuse it; a running daemon
    takes it as unreadable)."""
    try:
        _refuse_out_of_root(root, str(folder))  # one rule for a start and a running daemon
    except OSError:
        raise RootError(folder, f"stage folder is a symlink out of the root "
                        f"(to {folder.resolve()}); symlinks are not followed out of it"
                        ) from None


def check_readable_stages(root: Path, stages: Iterable[str]) -> None:
    """RootError for the first stage folder that cannot be listed or searched: for
    commands that must see every story (`rebuild`), unreadable is not empty."""
    for stage in stages:
        why = stage_problem(root, stage)
        if why is not None:
            raise RootError(root / stage, f"cannot read the stage folder ({why}); "
                            "its stories would be left out")


def find_git_dir(root: Path) -> Path | None:
    """The `.git` folder of the checkout holding root, if any (for `index.lock`)."""
    for folder in (root.resolve(), *root.resolve().parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = _read_small_file(dot_git)
            if text.startswith("gitdir:"):
                target = Path(text.split(":", 1)[1].strip())
                return target if target.is_absolute() else (folder / target).resolve()
    return None


def git_busy(root: Path) -> bool:
    """Git visibly works on the checkout holding root (its `index.lock` exists).

    Looked up each time (a few stats, only when a delete is pending): the root
    may become a git checkout while the daemon runs.
    """
    git_dir = find_git_dir(root)
    return git_dir is not None and (git_dir / "index.lock").exists()


READ_CHUNK = 64 * 1024  # reads past a file's size at open (it grew) go in these steps


def read_at_most(fd: int, limit: int) -> bytes:
    """The first `limit` bytes of an open file (all of it when smaller).

    The buffer is sized from fstat, not from `limit`: reading `limit` at once
    allocates the whole limit (a megabyte) for every 2 KB story. A file that
    grows while it is read is still cut at `limit`.
    """
    want = min(os.fstat(fd).st_size + 1, limit)
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = os.read(fd, min(want, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        want = READ_CHUNK
    return b"".join(chunks)
