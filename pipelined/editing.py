"""Change a story's fields by editing its file, the way a careful person would.

Shared by `set`, `claim`, the MCP tools and the HTTP API; the daemon then syncs
the edit like any editor's (docs/design.md, "Surfaces"). Four promises:

- **Only that line.** A changed field rewrites its own front-matter line, or
  adds one before the closing `---`; every other byte stays as it was
  (comments, key order, line endings, a byte order mark). A field whose value
  spans several lines, a key written twice, or a front matter that does not
  parse is refused with one line, never reformatted. The new text is parsed
  again before it is written: it must read back as exactly the old fields
  with the change, the same other keys, and no new error.
- **Atomic.** The new text goes to a hidden temporary file in the same folder
  (the daemon ignores it), is synced, gets the file's mode, and is renamed
  over the story file; the folder is synced.
- **Compare-and-swap.** Right before the rename the file is read again: if
  anything changed it since it was read, nothing is written (`EditConflict`).
- **One writer at a time.** Edits through pipelined hold an exclusive
  `flock` on the story file for their read-change-write; one that waited
  finds the file replaced and starts again on the new one. So of eight
  `claim`s at once exactly one wins and the others see its agent.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelined.authoring import find_story_file
from pipelined.durable import fsync_folder, write_all
from pipelined.errors import (
    EditConflict,
    EditRefused,
    FieldError,
    RootError,
    StoryClaimed,
    StoryNotFound,
)
from pipelined.schema import FIELDS, KIND, MAX_TEXT, parse_number
from pipelined.story import ParsedStory, check_field, parse_story

__all__ = [
    "Edited",
    "claim_story",
    "parse_assignment",
    "parse_refs",
    "update_story",
]

LOCK_WAIT_S = 10.0  # another pipelined edit of the same file holds its lock at most this
_LOCK_POLL_S = 0.005
_TEMP_PREFIX = ".pipelined-edit-"
_OPENING = re.compile(r"-{3,}[ \t]*\r?\n")
_CLOSING = re.compile(r"-{3,}\s*")


@dataclass(frozen=True)
class Edited:
    """One edit: the story, its file, its fields before and after (stored forms:
    `depends_on` as JSON text), and which fields changed (none: nothing written)."""

    story_id: str
    stage: str
    path: Path
    before: dict[str, Any]
    after: dict[str, Any]
    changed: tuple[str, ...]


# -- values ----------------------------------------------------------------------------

def parse_refs(text: str) -> list[int | str] | None:
    """`12,15` or `12, 15_story_x` -> [12, 15] / [12, '15_story_x']; empty -> None."""
    if not text.strip():
        return None
    refs: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if (number := parse_number(part)) is not None:
            refs.append(number)
        elif part and part[0].isdigit() and "_" in part and "/" not in part:
            refs.append(part)
        elif part:
            raise FieldError("depends_on", part, "not a story number or id")
    return refs or None


def parse_assignment(text: str) -> tuple[str, Any]:
    """`field=value` from the command line -> (field, value as the file holds it).

    Text fields take the value as it is; `retry_count` an integer; `blocked`
    true/false (yes/no); `depends_on` comma-separated numbers or ids. An empty
    value clears the field (null).
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep:
        raise FieldError(name, text, "write it as field=value")
    if name not in FIELDS:
        raise FieldError(name, raw, f"no such field (fields: {', '.join(FIELDS)})")
    kind = KIND[name]
    if raw == "" or (kind != "text" and raw.strip() == ""):
        return name, None
    if kind == "count":
        count = parse_number(raw.strip())
        if count is None:
            raise FieldError(name, raw, "expected a whole number such as 0 or 3")
        return name, count
    if kind == "flag":
        word = raw.strip().lower()
        if word not in ("true", "false", "yes", "no"):
            raise FieldError(name, raw, "expected true or false")
        return name, word in ("true", "yes")
    if kind == "refs":
        return name, parse_refs(raw)
    return name, raw


def _checked(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes in stored form, each checked against its field's kind."""
    checked: dict[str, Any] = {}
    for name, given in changes.items():
        value = given
        if name not in FIELDS:
            raise FieldError(name, value, f"no such field (fields: {', '.join(FIELDS)})")
        if KIND[name] == "text" and isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise FieldError(name, value, "not valid text (a lone surrogate)") from None
            if not value.strip():
                value = None
            elif len(value) > MAX_TEXT:
                raise FieldError(name, value, f"{len(value)} characters; at most {MAX_TEXT}")
        try:
            checked[name] = check_field(name, value)
        except ValueError as exc:
            raise FieldError(name, value, str(exc)) from None
    return checked


def _yaml_value(name: str, stored: Any) -> str:
    """One line of YAML for a stored value: JSON scalars and lists are valid YAML."""
    if stored is None:
        return "null"
    kind = KIND[name]
    if kind == "flag":
        return "true" if stored else "false"
    if kind == "count":
        return str(stored)
    if kind == "refs":  # stored as JSON text; written as a YAML flow list, readable
        items = json.loads(stored)
        return "[" + ", ".join(str(i) if isinstance(i, int) else _quoted(i) for i in items) + "]"
    return _quoted(stored)


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar, readable (accents as they are) and on one line:
    controls, line and paragraph separators, and other invisible characters as
    escapes."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"):
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# -- the text --------------------------------------------------------------------------

def _rewrite(text: str, values: Mapping[str, Any], path: Path) -> str:
    """`text` with each field's line set to its value (see the module's promises).

    Lines are split at "\n" only (a `\r` before it stays with its line), so a
    line separator inside some quoted value is not taken for a line end.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    head = text[len(bom):]
    opening = _OPENING.match(head)
    cr = "\r" if opening is not None and opening.group().endswith("\r\n") else ""
    new_lines = [f"{name}: {_yaml_value(name, value)}" for name, value in values.items()]
    if opening is None:  # no front matter: one is put on top, the text follows as it was
        return bom + "\n".join(["---", *new_lines, "---", ""]) + head
    lines = head[opening.end():].split("\n")
    end = next((i for i, line in enumerate(lines) if _CLOSING.fullmatch(line)), None)
    if end is None:
        raise EditRefused(path, "its front matter is not closed by a --- line")
    for name, new_line in zip(values, new_lines, strict=True):
        key = re.compile(rf"{re.escape(name)}[ \t]*:(?:[ \t]|\r?$)")
        found = [i for i in range(end) if key.match(lines[i])]
        if len(found) > 1:
            raise EditRefused(path, f"{name} is written {len(found)} times in the front matter")
        if not found:
            lines.insert(end, new_line + cr)
            end += 1
            continue
        i = found[0]
        rest = lines[i].split(":", 1)[1].strip()
        follows = lines[i + 1] if i + 1 < end else ""
        if rest[:1] in ("|", ">") or follows[:1] in (" ", "\t", "-"):
            raise EditRefused(path, f"the value of {name} spans several lines; change it "
                                    "in an editor")
        lines[i] = new_line + ("\r" if lines[i].endswith("\r") else "")
    return bom + opening.group() + "\n".join(lines)


# -- the file --------------------------------------------------------------------------

def update_story(root: Path, stages: Sequence[str], ref: str, changes: Mapping[str, Any],
                 *, max_bytes: int,
                 require: Callable[[str, dict[str, Any]], None] | None = None) -> Edited:
    """Set `changes` (field -> value as a file holds it) in the story `ref` names.

    `require(story_id, fields)` may refuse the edit once the file is locked and
    read (a claim of a story someone else holds). Fields already equal write
    nothing.
    """
    values = _checked(changes)
    deadline = time.monotonic() + LOCK_WAIT_S
    stage, story_id = find_story_file(root, stages, ref)
    path = _edit_target(root, root / stage / f"{story_id}.md")
    fd = _lock(path, deadline, ref)
    try:
        st = os.fstat(fd)
        raw = _read_all(fd, max_bytes, path)
        before_parse = parse_story(raw, max_bytes)
        broken = [e for e in before_parse.errors if e.code != "empty"]
        if before_parse.broken and broken:
            raise EditRefused(path, f"it does not parse ({broken[0].message}); fix it in "
                                    "an editor")
        before = dict(before_parse.fields)
        if require is not None:
            require(story_id, before)
        wrong = {e.message.split(":", 1)[0] for e in before_parse.errors if e.code == "bad_value"}
        changed = tuple(name for name, value in values.items()
                        if before.get(name) != value or name in wrong)
        after = {**before, **values}
        if not changed:
            return Edited(story_id, stage, path, before, after, ())
        text = _rewrite(raw.decode("utf-8"), {n: values[n] for n in changed}, path)
        new_raw = text.encode("utf-8")
        _check_reads_back(new_raw, before_parse, after, max_bytes, path)
        _replace(path, new_raw, raw, st)
        return Edited(story_id, stage, path, before, after, changed)
    finally:
        os.close(fd)


def claim_story(root: Path, stages: Sequence[str], ref: str, agent: str,
                *, max_bytes: int) -> Edited:
    """Set `agent` only if the story has none, or has this one (StoryClaimed if not)."""
    wanted = agent.strip()
    if not wanted:
        raise FieldError("agent", agent, "a claim needs an agent name")

    def unclaimed(story_id: str, fields: dict[str, Any]) -> None:
        holder = fields.get("agent")
        if holder is not None and holder.strip() and holder != wanted:
            raise StoryClaimed(story_id, holder)

    return update_story(root, stages, ref, {"agent": wanted}, max_bytes=max_bytes,
                        require=unclaimed)


def _edit_target(root: Path, path: Path) -> Path:
    """The file to edit: the story file, or the file its symlink names (renaming over
    the symlink would turn it into a copy). Wherever the path leads (a symlinked story,
    a stage folder that is a symlink), the file must be a `.md` file inside the root
    and outside `.git`: an edit never writes into `.git/config` or another file a
    committed symlink points at."""
    real = Path(os.path.realpath(path))
    root_real = Path(os.path.realpath(root))
    if not real.is_relative_to(root_real) or real == root_real:
        raise EditRefused(path, "it leads out of the root (a symlink)")
    if real.suffix != ".md" or ".git" in real.relative_to(root_real).parts:
        raise EditRefused(path, f"it leads to {real}, which is no story file (a symlink)")
    return real


def _lock(path: Path, deadline: float, ref: str) -> int:
    """A descriptor on the story file holding its exclusive lock, and still the file at
    `path` (one replaced while we waited is locked afresh)."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoryNotFound(ref) from None  # moved or deleted meanwhile
        except OSError as exc:
            raise EditRefused(path, f"cannot open it ({exc.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise EditRefused(path, "not a regular file")
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EditConflict(path, "another edit holds it") from None
                    time.sleep(_LOCK_POLL_S)
                except OSError as exc:  # no locks on this file system (ENOLCK)
                    raise EditRefused(path, f"cannot lock it ({exc.strerror})") from None
            held = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                raise StoryNotFound(ref) from None
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # replaced by the edit we waited for: lock the new file


def _read_all(fd: int, max_bytes: int, path: Path) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError as exc:
            raise EditRefused(path, f"cannot read it ({exc.strerror})") from None
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise EditRefused(path, f"the file is over the {max_bytes}-byte limit")
        chunks.append(chunk)


def _check_reads_back(new_raw: bytes, before: ParsedStory, after: Mapping[str, Any],
                      max_bytes: int, path: Path) -> None:
    """The edited text must read back as exactly the intended fields, the same other
    keys and no new error; otherwise nothing is written."""
    if len(new_raw) > max_bytes:
        raise EditRefused(path, f"the edited file would be over the {max_bytes}-byte limit")
    parsed = parse_story(new_raw, max_bytes)
    new_errors = [e for e in parsed.errors if e not in before.errors]
    if new_errors or parsed.fields != dict(after) or parsed.extra != before.extra:
        why = new_errors[0].message if new_errors else "it would not read back as intended"
        raise EditRefused(path, f"the edit cannot be made line by line ({why}); change it "
                                "in an editor")


def _replace(path: Path, new_raw: bytes, old_raw: bytes, st: os.stat_result) -> None:
    """Write `new_raw` beside `path` and rename it over, unless the file changed."""
    folder = path.parent
    temp = folder / f"{_TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise EditRefused(path, f"cannot write beside it ({exc.strerror})") from None
    try:
        try:
            write_all(fd, new_raw)
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
            os.fsync(fd)
        finally:
            os.close(fd)
        if not _unchanged(path, old_raw, st):
            raise EditConflict(path, "the file changed since it was read")
        os.rename(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise EditRefused(path, f"cannot write it ({exc.strerror})") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    try:
        fsync_folder(folder)
    except OSError as exc:
        raise RootError(path, f"written, but its folder cannot be synced ({exc.strerror}): "
                              "the edit may not survive a power cut") from None


def _unchanged(path: Path, old_raw: bytes, st: os.stat_result) -> bool:
    """The file at `path` is still the inode read, with the same bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        now = os.fstat(fd)
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev) or now.st_size != len(old_raw):
            return False
        return _read_all(fd, len(old_raw) + 1, path) == old_raw
    except EditRefused:
        return False
    finally:
        os.close(fd)
