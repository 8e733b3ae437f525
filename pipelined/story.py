"""Bytes of one story file -> a parsed story: fields, extra keys, content, errors.

Pure: no filesystem, no database, no clock. A file that cannot be parsed is
still a story; its fields are null and its errors say why.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

# The version of these rules (bump it there when they change what is stored) is
# defined beside the other settings that shape stored rows: a restart compares
# it without importing the parser.
from pipelined.schema import (  # FIELDS re-exported: the parser's fields
    FIELDS,
    KIND,
    StoryError,
    parse_number,
)
from pipelined.shaping import PARSER_VERSION

__all__ = ["FIELDS", "PARSER_VERSION", "ParsedStory", "parse_story", "story_number"]


_ID_NUMBER = re.compile(r"^([0-9]+)_")
MAX_NODES = 50_000  # values in one front matter, aliases expanded
MAX_DEPTH = 64
MAX_INT = 2**53 - 1  # integers above this do not survive pycrdt (floats) or SQLite
_FRONT_MATTER_START = re.compile(r"^-{3,}[ \t]*\r?\n")
_FRONT_MATTER_END = re.compile(r"^-{3,}\s*$", re.MULTILINE)
_PLAIN_IDS = re.compile(r"\w[\w ,]{0,59}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_DUPLICATE_ERRORS = 10  # messages for duplicated extra or nested keys; known fields always

_handler: Any = None


@dataclass(frozen=True)
class _Duplicate:
    """A key written twice in one YAML mapping."""

    key: Any
    top_level: bool  # in the front matter mapping itself, not nested
    line: int  # of the second occurrence: from 0 in the YAML text, then a line of the file


def _front_matter_handler() -> Any:
    """python-frontmatter's YAML handler with libyaml's safe loader, built on first use.

    Imported lazily: a restart with nothing changed parses no file, and these
    imports are a large part of the daemon's start-up time (see
    docs/benchmarks.md).
    """
    global _handler  # noqa: PLW0603 - a lazily built module singleton
    if _handler is None:
        _handler = _build_handler()
    return _handler


def _build_handler() -> Any:
    import frontmatter
    import yaml

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it

    class Loader(base):  # type: ignore[misc]
        """The safe loader, noting keys written twice (PyYAML silently keeps the last)."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.root: Any = None
            self.duplicates: list[_Duplicate] = []

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            pairs = node.value
            count = len(pairs)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            # Without merge keys (`<<`: they shorten or replace node.value), a
            # mapping with no repeated key has one entry per pair: look for the
            # duplicates only on a mismatch, so the common case costs nothing.
            if len(mapping) != count or node.value is not pairs:
                self._note_duplicates(node, pairs, deep)
            return mapping

        def _note_duplicates(self, node: Any, pairs: list[Any], deep: bool) -> None:
            first: dict[Any, Any] = {}  # the key as the mapping holds it: `1` for `true`
            noted: set[Any] = set()
            for key_node, _value in pairs:
                if key_node.tag == _MERGE_TAG:  # merged keys may be overridden
                    continue
                key = self.construct_object(key_node, deep=deep)  # built already: cached
                if key not in first:
                    first[key] = key
                elif key not in noted:
                    noted.add(key)
                    self.duplicates.append(
                        _Duplicate(first[key], node is self.root, key_node.start_mark.line))

    class Handler(frontmatter.YAMLHandler):  # type: ignore[misc,name-defined]
        def load(self, fm: str, **kwargs: object) -> Any:
            return self.load_noting_duplicates(fm)[0]

        def load_noting_duplicates(self, fm: str) -> tuple[Any, list[_Duplicate]]:
            loader = Loader(fm)
            try:
                loader.root = loader.get_single_node()
                loaded = None if loader.root is None else loader.construct_document(loader.root)
                duplicates: list[_Duplicate] = loader.duplicates
            finally:
                loader.dispose()
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError("front matter is not a mapping")
            return loaded, duplicates

    return Handler()


@dataclass(frozen=True)
class ParsedStory:
    """What one file says: the typed fields, every other key, the text, the errors."""

    fields: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    content: str | None = None  # None only for an oversized file
    errors: tuple[StoryError, ...] = ()  # codes and messages (schema.ERROR_CODES)
    # True when the file as a whole gave no fields (no or unparsable front
    # matter, empty, not UTF-8, too large): a half-written file looks like this.
    broken: bool = False


def story_number(story_id: str) -> int | None:
    """The number an id starts with (`10_story_login` -> 10), or None."""
    match = _ID_NUMBER.match(story_id)
    return parse_number(match.group(1)) if match else None


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


def check_field(key: str, value: Any) -> Any:
    """A pipeline field's value as stored (`depends_on` as JSON text), or ValueError
    saying what was expected and what was found."""
    return _typed(key, value)


def _typed(key: str, value: Any) -> Any:
    """Check one known field; raise ValueError saying what was expected and what was found.

    No coercion: the contract types are the file's types, so a value that only
    looks right (`agent: 123`, `depends_on: 12`) is an error the user can fix.
    """
    if value is None:
        return None
    kind = KIND[key]
    if kind == "text":
        if isinstance(value, str):
            return value
        hint = " (put it in quotes)" if isinstance(value, int | float | date) else ""
        raise ValueError(f"expected text, got {_short(value)}{hint}")
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
            raise ValueError(f"expected an integer from 0 to {MAX_INT}, got {_short(value)}")
        return value
    if kind == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_short(value)}")
        return value
    if kind == "refs":
        if not isinstance(value, list):
            raise ValueError(f"expected a list such as [{_list_example(value)}], "
                             f"got {_short(value)}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int | str) or (
                    isinstance(item, int) and item < 0):
                raise ValueError(f"expected a list of story numbers or ids, got {_short(value)}")
        return json.dumps(value)
    raise AssertionError(key)  # pragma: no cover


def _list_example(value: Any) -> str:
    """What a bare `depends_on` value looks like written as a list (`12` -> `12`)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and _PLAIN_IDS.fullmatch(value):
        return value  # `depends_on: 12, 40_bug_crash` is one string: [12, 40_bug_crash]
    return "12"


def parse_story(raw: bytes, max_bytes: int) -> ParsedStory:
    """Parse one story file's bytes. Never raises: problems become `errors`."""
    try:
        return _parse(raw, max_bytes)
    except Exception as exc:  # a bug or a hostile file must not stop the sync
        text = raw.decode("utf-8", errors="replace") if len(raw) <= max_bytes else None
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(StoryError("parser_failed",
                                              f"cannot parse the file ({type(exc).__name__})"),))


def _parse(raw: bytes, max_bytes: int) -> ParsedStory:
    if len(raw) > max_bytes:
        return ParsedStory(_null_fields(), broken=True, content=None,
                           errors=(too_large(len(raw), max_bytes),))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", errors="replace")
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(StoryError("not_utf8", f"not UTF-8 (byte {exc.start})"),))
    if not text.strip():
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(StoryError("empty", "file is empty"),))
    # Front matter only counts at the very top (after an optional byte order mark).
    head = text.removeprefix("\ufeff")
    opening = _FRONT_MATTER_START.match(head)
    if not opening:
        return ParsedStory(_null_fields(), broken=True, content=text)
    if not _FRONT_MATTER_END.search(head, opening.end()):
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(StoryError("front_matter_unclosed",
                                              "front matter is not closed by a --- line"),))
    try:
        metadata, duplicates = _load_front_matter(head)
    except Exception as exc:
        return ParsedStory(_null_fields(), broken=True, content=text,
                           errors=(StoryError("front_matter_syntax", _yaml_reason(exc)),))
    try:
        fields, extra, errors = _read_keys(metadata or {}, duplicates)
    except _TooBig:
        return ParsedStory(_null_fields(), broken=True, content=text, errors=(StoryError(
            "front_matter_too_large",
            f"front matter is too large or too deep (over {MAX_NODES} values or "
            f"{MAX_DEPTH} levels once YAML aliases are expanded)"),))
    return ParsedStory(fields, extra=extra, content=text, errors=tuple(errors))


def _yaml_reason(exc: Exception) -> str:
    """A YAML error in our words, with the file's line and column (PyYAML's own text
    says `in "<unicode string>"`, which names no file)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        text = " ".join(str(exc).split())[:200]
        return text if text.startswith("front matter") else f"front matter does not parse: {text}"
    reason = f"front matter does not parse at line {mark.line + 1}, column {mark.column + 1}: "
    reason += " ".join(str(problem).split())[:120]
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        reason += (f" ({' '.join(str(context).split())[:80]} at line {context_mark.line + 1}, "
                   f"column {context_mark.column + 1})")
    return reason


def _load_front_matter(head: str) -> tuple[dict[Any, Any] | None, list[_Duplicate]]:
    """The front matter mapping and its duplicated keys; raises if it is no YAML mapping.

    Split as frontmatter.parse splits, but loaded here: frontmatter.parse copies
    the mapping, which would lose the duplicates.
    """
    handler = _front_matter_handler()
    normalized = head.replace("\r\n", "\n").strip()
    try:
        fm, _body = handler.split(normalized)
    except ValueError:
        return None, []  # as frontmatter.parse: no front matter
    metadata, duplicates = handler.load_noting_duplicates(fm)
    if any(not d.top_level for d in duplicates):
        # The YAML text starts on the line that ends the opening ---, or on the
        # last blank line after it; the loader counts lines from 0 there.
        opening = handler.FM_BOUNDARY.match(normalized)
        first_line = normalized.count("\n", 0, opening.end() if opening else 0) + 1
        duplicates = [replace(d, line=first_line + d.line) for d in duplicates]
    return metadata, duplicates


def _read_keys(metadata: dict[Any, Any], duplicates: list[_Duplicate],
               ) -> tuple[dict[str, Any], dict[str, Any], list[StoryError]]:
    """(typed fields, extra keys, errors) of a loaded front matter; raises _TooBig."""
    twice = {str(d.key) for d in duplicates if d.top_level}
    fields = _null_fields()
    extra: dict[str, Any] = {}
    errors: list[StoryError] = []
    duplicate_errors: dict[str, None] = {}  # messages in order, each once
    budget = [MAX_NODES]
    for key, value in metadata.items():
        name = str(key)
        if name in FIELDS:
            if name in twice:  # which value is meant is unclear, e.g. after a git merge
                errors.append(StoryError("duplicate_key", _duplicate_key(name)))
                continue
            try:
                fields[name] = _typed(name, value)
            except ValueError as exc:
                errors.append(StoryError("bad_value", f"{name}: {exc}"))
        else:
            if name in twice or name in extra:  # `1:` and `"1":` are both "1"
                duplicate_errors[_duplicate_key(name)] = None
            extra[name] = _jsonable(value, budget)
    for d in sorted(duplicates, key=lambda d: d.line):
        if not d.top_level:
            duplicate_errors[_duplicate_key(str(d.key), d.line)] = None
    return fields, extra, errors + [StoryError("duplicate_key", m)
                                     for m in _capped(list(duplicate_errors))]


def too_large(size: int, max_bytes: int) -> StoryError:
    return StoryError("too_large", f"file is {size} bytes, over the {max_bytes}-byte limit")


def _duplicate_key(name: str, line: int | None = None) -> str:
    if line is None:
        return f"duplicate key {_short(name)} in the front matter"
    return f"duplicate key {_short(name)} in a nested mapping of the front matter (line {line})"


def _capped(messages: list[str]) -> list[str]:
    """At most MAX_DUPLICATE_ERRORS messages: a hostile file must not fill the errors column."""
    if len(messages) <= MAX_DUPLICATE_ERRORS:
        return messages
    more = len(messages) - MAX_DUPLICATE_ERRORS
    return [*messages[:MAX_DUPLICATE_ERRORS], f"and {more} more duplicate keys"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
