"""Writing stories through the folders: `new` (a fresh numbered file) and `move`.

Every change goes through the filesystem, exactly like a person's `mv` or
editor would make it; the daemon, when it runs, picks it up like any other
edit. Nothing here touches the database except to read the story-number
high-water mark (read-only).

Two `new` at the same moment never get the same number: a number is claimed
by creating `<root>/.pipelined-number-<N>` with O_EXCL, checked against the
folders once claimed, and released once the story file exists. The story file
itself is written to a hidden temporary file in the stage folder and then
hard-linked to its final name (which also fails if the name exists), so the
final name never shows a half-written file.

`new` exits 0 only once the story is on disk for good: every byte written (a
write on a nearly full disk may be short), the file synced, and the stage
folder synced after the link. Any error on the way removes what was written
and raises RootError; no file is left under its final name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelined.config import resolve_stage
from pipelined.durable import fsync_folder, rename_no_replace, write_all
from pipelined.errors import (
    AmbiguousStory,
    RootError,
    StoryNotFound,
    TitleError,
)
from pipelined.layout import check_inside, is_story_name, stages_out_of_root, stat_story
from pipelined.schema import MAX_TEXT, STORY_TYPES, parse_number
from pipelined.story import story_number

__all__ = [
    "STORY_TYPES",
    "MovedStory",
    "NewStory",
    "create_story",
    "find_story_file",
    "highest_number_on_disk",
    "move_story",
    "slugify",
    "story_front_matter",
]

CLAIM_PREFIX = ".pipelined-number-"
STALE_CLAIM_S = 60.0  # a claim older than this was left by a process that died
MAX_SLUG = 50
_STAGE_DIR = re.compile(r"^[0-9]+_")
_ATTEMPTS = 10_000


@dataclass(frozen=True)
class NewStory:
    """A story file `new` wrote."""

    story_id: str
    number: int
    stage: str
    path: Path


@dataclass(frozen=True)
class MovedStory:
    """A story file `move` renamed (from_stage == to_stage: it was already there)."""

    story_id: str
    from_stage: str
    to_stage: str
    path: Path


def slugify(title: str) -> str:
    """`Fix: the login (again)!` -> `fix_the_login_again`; nothing left -> `untitled`.

    ASCII only (accents folded), so ids are safe file names everywhere git
    goes; separators, dots and slashes all become `_`, so a path-like title
    (`../x`, `a/b`) can never leave the stage folder.
    """
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")
    if len(slug) > MAX_SLUG:
        cut = slug[:MAX_SLUG]
        slug = cut.rsplit("_", 1)[0] if "_" in cut else cut
    return slug or "untitled"


def story_front_matter(name: str, agent: str | None, blocked: bool,
                       depends_on: Sequence[int | str] | None) -> str:
    """The text of a new story file. JSON scalars are valid YAML, and quote everything."""
    deps = json.dumps(list(depends_on)) if depends_on else "null"
    return "\n".join([
        "---",
        f"name: {json.dumps(name, ensure_ascii=False)}",
        f"agent: {json.dumps(agent, ensure_ascii=False)}",
        "retry_count: 0",
        f"blocked: {json.dumps(blocked)}",
        f"depends_on: {deps}",
        "---",
        f"# {' '.join(name.split())}",
        "",
    ])


def _stage_folders(root: Path, stages: Iterable[str]) -> list[str]:
    """The configured stages plus every other `<digits>_…` folder under root."""
    found = list(stages)
    try:
        with os.scandir(root) as entries:
            found += [e.name for e in entries
                      if e.is_dir(follow_symlinks=False) and _STAGE_DIR.match(e.name)
                      and e.name not in found]
    except OSError:
        pass
    return found


def highest_number_on_disk(root: Path, stages: Iterable[str]) -> int:
    """The highest story number in any stage folder (0 if none)."""
    highest = 0
    for stage in _stage_folders(root, stages):
        try:
            names = os.listdir(root / stage)
        except OSError:
            continue
        for name in names:
            if is_story_name(name):
                highest = max(highest, story_number(name) or 0)
    return highest


def _number_taken(root: Path, stages: Iterable[str], number: int) -> bool:
    for stage in _stage_folders(root, stages):
        try:
            names = os.listdir(root / stage)
        except OSError:
            continue
        if any(is_story_name(n) and story_number(n) == number for n in names):
            return True
    return False


def _claim(root: Path, number: int) -> Path | None:
    """Create the claim file for `number`; None if another process holds it."""
    claim = root / f"{CLAIM_PREFIX}{number}"
    for _ in range(2):
        try:
            os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return claim
        except FileExistsError:
            try:
                age = time.time() - claim.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try once more
            if age < STALE_CLAIM_S:
                return None
            # Left by a process that died between claim and release; the check
            # against the folders after claiming still protects a written story.
            claim.unlink(missing_ok=True)
    return None


def check_stage(root: Path, stages: Sequence[str], stage: str) -> Path:
    """The folder of a configured stage (or its alias), or UnknownStage / RootError."""
    folder = root / resolve_stage(stage, stages)
    if not folder.is_dir():
        raise RootError(folder, "stage folder is missing (create it, or run `pipelined init`)")
    check_inside(root, folder)  # nothing is written out of the root
    return folder


def create_story(root: Path, stages: Sequence[str], stage: str, title: str, story_type: str,
                 agent: str | None = None, blocked: bool = False,
                 depends_on: Sequence[int | str] | None = None,
                 high_water: int = 0) -> NewStory:
    """Write `<number>_<type>_<slug>.md` into the stage folder with a fresh number.

    `high_water` is the database's mark (deleted stories included); the number
    is one more than it and than every number in the folders.
    """
    name = title.strip()
    if not name:
        raise TitleError(title, "a story needs a title")
    if not any(char.isalnum() for char in name):
        raise TitleError(title[:40], "the title has no letter or digit to name the file by")
    for what, given in (("title", name), ("agent", agent or "")):
        if len(given) > MAX_TEXT:
            raise TitleError(given[:40] + "...", f"the {what} is {len(given)} characters; "
                                                 f"at most {MAX_TEXT}")
    if story_type not in STORY_TYPES:
        raise TitleError(story_type, f"the type is one of {', '.join(STORY_TYPES)}")
    folder = check_stage(root, stages, stage)
    stage = folder.name  # the folder, when an alias was given
    text = story_front_matter(name, agent, blocked, depends_on).encode("utf-8")
    slug = slugify(name)
    temp = _write_temp(folder, text)
    try:
        number = max(high_water, highest_number_on_disk(root, stages)) + 1
        for _ in range(_ATTEMPTS):
            claim = _claim(root, number)
            if claim is None:
                number += 1
                continue
            try:
                if _number_taken(root, stages, number):
                    number += 1
                    continue
                story_id = f"{number}_{story_type}_{slug}"
                final = folder / f"{story_id}.md"
                if not _publish(folder, temp, final):
                    number += 1
                    continue
                return NewStory(story_id, number, stage, final)
            finally:
                claim.unlink(missing_ok=True)
        raise RootError(root, f"no free story number after {_ATTEMPTS} attempts")
    finally:
        temp.unlink(missing_ok=True)


def _write_temp(folder: Path, text: bytes) -> Path:
    """A hidden `.tmp` file the daemon ignores, complete and synced before it is linked."""
    for attempt in range(100):
        temp = folder / f".pipelined-new-{os.getpid()}-{time.monotonic_ns()}-{attempt}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _cannot_write(folder, exc) from None
        try:
            try:
                write_all(fd, text)
                os.fsync(fd)
            finally:
                os.close(fd)  # some file systems report a failed write only here
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise _cannot_write(folder, exc) from None
        return temp
    raise RootError(folder, "cannot create a temporary file")  # pragma: no cover


def _publish(folder: Path, temp: Path, final: Path) -> bool:
    """Give the complete temp file its final name, durably; False if the name is taken.

    One sync of the folder makes both the new name and the temp name's removal
    survive a power cut. On an error the final name is removed again.
    """
    linked = False
    try:
        os.link(temp, final)
        linked = True
        temp.unlink()
        fsync_folder(folder)
    except FileExistsError:
        return False  # only the link raises it: the number was taken meanwhile
    except OSError as exc:
        if linked:
            final.unlink(missing_ok=True)
        raise _cannot_write(folder, exc) from None
    return True


def _cannot_write(folder: Path, exc: OSError) -> RootError:
    return RootError(folder, f"cannot write a story file ({exc.strerror or exc})")


def find_story_file(root: Path, stages: Sequence[str], ref: str) -> tuple[str, str]:
    """(stage, story_id) of the story `ref` names: its id, or its bare number."""
    if "\x00" in ref or "/" in ref:
        raise StoryNotFound(ref)  # no file name holds these
    matches: list[tuple[str, str]] = []
    number = parse_number(ref)
    refused = stages_out_of_root(root, stages)  # its files are not the pipeline's
    stages = [stage for stage in stages if stage not in refused]
    if number is not None:
        for stage in stages:
            try:
                names = sorted(os.listdir(root / stage))
            except OSError:
                continue
            matches += [(stage, n[:-3]) for n in names
                        if is_story_name(n) and story_number(n) == number]
    elif is_story_name(f"{ref}.md"):
        for stage in stages:
            try:
                found = stat_story(root, stage, ref)
            except OSError:
                continue
            if found is not None:
                matches.append((stage, ref))
    if not matches:
        raise StoryNotFound(ref)
    if len(matches) > 1:
        raise AmbiguousStory(ref, [f"{stage}/{story_id}.md" for stage, story_id in matches])
    return matches[0]


def move_story(root: Path, stages: Sequence[str], ref: str, to_stage: str) -> MovedStory:
    """Rename the story file into `to_stage`, a folder or its alias (a no-op when it
    is already there)."""
    folder = check_stage(root, stages, to_stage)
    to_stage = folder.name  # the folder, when an alias was given
    from_stage, story_id = find_story_file(root, stages, ref)
    source = root / from_stage / f"{story_id}.md"
    target = folder / f"{story_id}.md"
    if from_stage == to_stage:
        return MovedStory(story_id, from_stage, to_stage, target)
    try:
        rename_no_replace(source, target)
    except FileExistsError:
        raise RootError(target, "already exists (the story is in two stages; see "
                        "`pipelined doctor`)") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise StoryNotFound(ref) from None  # moved by someone else meanwhile
        raise RootError(source, f"cannot move it ({exc.strerror})") from None
    try:
        fsync_folder(folder)  # exit 0 means the move survives a power cut
        fsync_folder(source.parent)
    except OSError as exc:
        raise RootError(target, f"moved, but the folders cannot be synced ({exc.strerror})"
                        ) from None
    return MovedStory(story_id, from_stage, to_stage, target)
