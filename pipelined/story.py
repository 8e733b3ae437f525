"""Bytes of one story file -> a parsed story: fields, extra keys, content, errors.

Pure: no filesystem, no database, no clock. A file that cannot be parsed is
still a story; its fields are null and its errors say why.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

__all__ = ["FIELDS", "ParsedStory", "parse_story", "story_number"]

FIELDS = ("name", "agent", "retry_count", "blocked", "depends_on")
_ID_NUMBER = re.compile(r"^([0-9]+)_")
MAX_NODES = 50_000  # values in one front matter, aliases expanded
MAX_DEPTH = 64
MAX_INT = 2**53 - 1  # integers above this do not survive pycrdt (floats) or SQLite
_FRONT_MATTER_START = re.compile(r"^-{3,}[ \t]*\r?\n")
_FRONT_MATTER_END = re.compile(r"^-{3,}\s*$", re.MULTILINE)

_handler: Any = None


def _front_matter_handler() -> Any:
    """python-frontmatter's YAML handler with libyaml's safe loader, built on first use.

    Imported lazily: a restart with nothing changed parses no file, and these
    imports are a tenth of the daemon's start-up time.
    """
    global _handler  # noqa: PLW0603 - a lazily built module singleton
    if _handler is None:
        import frontmatter
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it

        class Handler(frontmatter.YAMLHandler):  # type: ignore[misc,name-defined]
            def load(self, fm: str, **kwargs: object) -> Any:
                loaded = yaml.load(fm, Loader=loader)
                if loaded is not None and not isinstance(loaded, dict):
                    raise ValueError("front matter is not a mapping")
                return loaded

        _handler = Handler()
    return _handler


@dataclass(frozen=True)
class ParsedStory:
    """What one file says: the typed fields, every other key, the text, the errors."""

    fields: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    content: str | None = None  # None only for an oversized file
    errors: tuple[str, ...] = ()
    # True when the file as a whole gave no fields (no or unparsable front
    # matter, empty, not UTF-8, too large): a half-written file looks like this.
    broken: bool = False


def story_number(story_id: str) -> int | None:
    """The number an id starts with (`10_story_login` -> 10), or None."""
    match = _ID_NUMBER.match(story_id)
    return int(match.group(1)) if match else None


def _null_fields() -> dict[str, Any]:
    return dict.fromkeys(FIELDS)


class _TooBig(ValueError):
    """Front matter that expands past the node budget (deep nesting, an alias bomb)."""


def _jsonable(value: Any, budget: list[int], depth: int = 0) -> Any:
    """YAML values as JSON can hold them (dates become ISO text).

    YAML aliases share one object among many places; copying them out can turn
    a few hundred bytes into gigabytes. `budget` (one counter shared by the
    whole walk) and the depth limit keep a hostile file cheap.
    """
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise _TooBig
    if isinstance(value, dict):
        return {str(k): _jsonable(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v, budget, depth + 1) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _typed(key: str, value: Any) -> Any:
    """Check one known field; raise ValueError with a short reason if it is wrong."""
    if value is None:
        return None
    if key in ("name", "agent"):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError("expected text")
    if key == "retry_count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
            raise ValueError(f"expected an integer from 0 to {MAX_INT}")
        return value
    if key == "blocked":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if key == "depends_on":
        items = value if isinstance(value, list) else [value]
        deps: list[int | str] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError("expected a list of story numbers or ids")
            if isinstance(item, int) and item < 0:
                raise ValueError("expected a list of story numbers or ids")
            deps.append(item)
        return json.dumps(deps)
    raise AssertionError(key)  # pragma: no cover


def parse_story(raw: bytes, max_bytes: int) -> ParsedStory:
    """Parse one story file's bytes. Never raises: problems become `errors`."""
    try:
        return _parse(raw, max_bytes)
    except Exception as exc:  # a bug or a hostile file must not stop the sync
        text = raw.decode("utf-8", errors="replace") if len(raw) <= max_bytes else None
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(f"cannot parse the file ({type(exc).__name__})",))


def _parse(raw: bytes, max_bytes: int) -> ParsedStory:
    if len(raw) > max_bytes:
        return ParsedStory(_null_fields(), broken=True, content=None,
                           errors=(f"file is {len(raw)} bytes, over the {max_bytes}-byte limit",))
    errors: list[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", errors="replace")
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(f"not UTF-8 (byte {exc.start})",))
    if not text.strip():
        return ParsedStory(_null_fields(), broken=True, content=text, errors=("file is empty",))
    # Front matter only counts at the very top (after an optional byte order mark).
    head = text.removeprefix("\ufeff")
    opening = _FRONT_MATTER_START.match(head)
    if not opening:
        return ParsedStory(_null_fields(), broken=True, content=text)
    if not _FRONT_MATTER_END.search(head, opening.end()):
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=("front matter is not closed by a --- line",))
    try:
        import frontmatter

        metadata, _body = frontmatter.parse(head, handler=_front_matter_handler())
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(f"front matter does not parse: {reason}",))
    fields = _null_fields()
    extra: dict[str, Any] = {}
    budget = [MAX_NODES]
    try:
        for key, value in metadata.items():
            name = str(key)
            if name in FIELDS:
                try:
                    fields[name] = _typed(name, value)
                except ValueError as exc:
                    errors.append(f"{name}: {exc}, got {_short(value)}")
            else:
                extra[name] = _jsonable(value, budget)
    except _TooBig:
        return ParsedStory(_null_fields(), broken=True, content=text, errors=(
            f"front matter is too large or too deep (over {MAX_NODES} values or "
            f"{MAX_DEPTH} levels once YAML aliases are expanded)",))
    return ParsedStory(fields, extra=extra, content=text, errors=tuple(errors))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
