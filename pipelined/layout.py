"""Which paths are story files, the id and stage of a path, and the stat pass.

No reads of file contents happen here: the stat pass only lists stage folders
and stats entries, so a restart with nothing changed opens no story file.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FileSignature",
    "StoryFile",
    "find_git_dir",
    "is_story_name",
    "stat_story",
    "stat_pass",
    "story_ref",
]

_STORY_ID = re.compile(r"^[0-9]+_[^/\\]*$")
_EDITOR_LEFTOVER = re.compile(
    r"(\.sw[a-p]x?|~|\.tmp|___jb_tmp___|___jb_old___|\.orig|\.rej)$|^\.|^#.*#$|^4913$"
)


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What a stat tells about a file; a different signature means "read it again"."""

    mtime_ns: int
    size: int
    inode: int


@dataclass(frozen=True, slots=True)
class StoryFile:
    """One story file found on disk."""

    story_id: str
    stage: str
    path: Path
    signature: FileSignature

    @property
    def rel_path(self) -> str:
        return f"{self.stage}/{self.story_id}.md"


def is_story_name(name: str) -> bool:
    """True for `<number>_<anything>.md` that is no hidden file or editor leftover."""
    if not name.endswith(".md") or _EDITOR_LEFTOVER.search(name):
        return False
    return bool(_STORY_ID.match(name[:-3])) and len(name) > 3


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


def _signature(st: os.stat_result) -> FileSignature:
    return FileSignature(st.st_mtime_ns, st.st_size, st.st_ino)


def _inside(root_real: str, path: Path) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def stat_story(root: Path, stage: str, story_id: str) -> StoryFile | None:
    """Stat one candidate path; None if absent, not a regular file, or a symlink out of root."""
    path = root / stage / f"{story_id}.md"
    try:
        st = path.lstat()
        if os.path.islink(path):
            if not _inside(os.path.realpath(root), path):
                return None
            st = path.stat()
    except OSError:
        return None
    if not _is_regular(st):
        return None
    return StoryFile(story_id, stage, path, _signature(st))


def _is_regular(st: os.stat_result) -> bool:
    return stat_mod.S_ISREG(st.st_mode)


def stat_pass(root: Path, stages: Iterable[str]) -> Iterator[StoryFile]:
    """Every story file in the stage folders: a listing and a stat each, no reads."""
    root_real = os.path.realpath(root)
    for stage in stages:
        folder = root / stage
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # a missing stage folder holds no stories
        for entry in entries:
            name = entry.name
            if not is_story_name(name):
                continue
            try:
                if entry.is_symlink():
                    if not _inside(root_real, Path(entry.path)):
                        continue
                    st = os.stat(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished between the listing and the stat
            if _is_regular(st):
                yield StoryFile(name[:-3], stage, Path(entry.path), _signature(st))


def find_git_dir(root: Path) -> Path | None:
    """The `.git` folder of the checkout holding root, if any (for `index.lock`)."""
    for folder in (root.resolve(), *root.resolve().parents):
        dot_git = folder / ".git"
        if dot_git.is_dir():
            return dot_git
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            if text.startswith("gitdir:"):
                target = Path(text.split(":", 1)[1].strip())
                return target if target.is_absolute() else (folder / target).resolve()
    return None
