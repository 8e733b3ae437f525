"""The story schema, in one place: the pipeline fields, their kinds, their columns.

The parser (`story`) checks a front-matter value by its field's kind, the
pipeline state (`state`) holds `STATE_KEYS`, the writer and the queries store
and read the `pipeline_items` columns through `to_column` / `from_column`, and
the CLI shows `ITEM_COLUMNS`. A new field is added here (and in a migration).
Pure and cheap to import: no SQLite, no pycrdt.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, NamedTuple

    Kind = Literal["text", "count", "flag", "refs"]
else:  # typing imports re and enum: more than a read command's own imports cost
    from pipelined.records import NamedTuple

__all__ = [
    "ERROR_CODES",
    "FIELDS",
    "FLAG_FIELDS",
    "ITEM_COLUMNS",
    "KIND",
    "MAX_NUMBER_DIGITS",
    "MAX_TEXT",
    "REFS_FIELDS",
    "RESET_ON_MOVE",
    "SORT_KEYS",
    "STATE_KEYS",
    "STORY_FIELDS",
    "STORY_TYPES",
    "StoryError",
    "StoryField",
    "errors_from_column",
    "errors_to_column",
    "from_column",
    "parse_number",
    "refs_from_column",
    "to_column",
]


class StoryField(NamedTuple):
    """One pipeline field of a story: its front-matter key (= its column) and kind.

    Kinds: `text` (a string), `count` (an integer >= 0), `flag` (true or false;
    stored as 0/1), `refs` (a list of story numbers or ids; stored, and held in
    the pipeline state, as JSON text). Every field may be null.
    """

    name: str
    kind: Kind


STORY_FIELDS = (
    StoryField("name", "text"),
    StoryField("agent", "text"),
    StoryField("retry_count", "count"),
    StoryField("blocked", "flag"),
    StoryField("depends_on", "refs"),
)
FIELDS = tuple(field.name for field in STORY_FIELDS)
KIND = {field.name: field.kind for field in STORY_FIELDS}
FLAG_FIELDS = tuple(f.name for f in STORY_FIELDS if f.kind == "flag")
REFS_FIELDS = tuple(f.name for f in STORY_FIELDS if f.kind == "refs")
# The pipeline state per story: its stage and the fields.
STATE_KEYS = ("stage", *FIELDS)
# A stage change sets this field to 0 in the pipeline state (unless the same
# burst also changed it in the file). The history triggers (migration 0003)
# read a stage change that sets it to 0 as that reset.
RESET_ON_MOVE = "retry_count"
# The longest name or agent pipelined writes into a file (`new`, `set`, MCP).
MAX_TEXT = 500
# A story number has at most this many digits (SQLite's INTEGER holds 2**63 - 1);
# an id with a longer one is still a story, with no number.
MAX_NUMBER_DIGITS = 18


def parse_number(text: str) -> int | None:
    """A story number as written (`12`, `007`): ASCII digits, at most
    MAX_NUMBER_DIGITS of them; None for anything else (`²`, `١٢`, 5,000 digits,
    which `int()` would take or choke on)."""
    if 0 < len(text) <= MAX_NUMBER_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


# The word after the number in a new story's id (`12_bug_login_crash`).
STORY_TYPES = ("story", "bug", "spike", "refactor")
# The orders `ls` and the views know.
SORT_KEYS = ("stage", "id", "name", "updated", "created")
# `pipeline_items` as every read shows it (content is read on its own).
ITEM_COLUMNS = ("id", "name", "stage", "agent", "retry_count", "blocked", "depends_on",
                "created_at", "updated_at")


def to_column(name: str, value: Any) -> Any:
    """A pipeline-state value as its column holds it (a flag as 0/1)."""
    if value is not None and KIND.get(name) == "flag":
        return int(bool(value))
    return value


def from_column(name: str, value: Any) -> Any:
    """A column's value as reads show it (a flag as a bool, refs as a list)."""
    if value is None:
        return None
    kind = KIND.get(name)
    if kind == "flag":
        return bool(value)
    if kind == "refs":
        return refs_from_column(value) if value else None
    return value


def refs_from_column(text: str) -> Any:
    """A refs column's JSON list (`depends_on`: story numbers and ids), decoded.

    The state writes it with `json.dumps` and its default separators, which escape
    a quote, a backslash, a control and a non-ASCII character with a backslash: a
    list of such plain strings is exactly `["a", "b"]`, one of numbers `[1, 2]`.
    Those are split here without the JSON decoder (decoding them was most of an
    `ls` of a large pipeline). Anything else (a mixed list, an escape, other
    spacing, damage) goes to `json.loads`, which decodes it or says what is wrong.
    """
    # As json.dumps writes it: a str (a BLOB is json's), ASCII, no raw controls.
    plain = isinstance(text, str) and text.isascii() and text.isprintable()
    if plain and len(text) >= 4 and text.startswith('["') and text.endswith('"]') and (
            "\\" not in text):
        items = text[2:-2].split('", "')
        if not any('"' in item for item in items):
            return items
    elif plain and len(text) >= 3 and text[0] == "[" and text[-1] == "]":
        numbers = text[1:-1].split(", ")
        if all(n.isascii() and n.isdigit() and (n[0] != "0" or n == "0") for n in numbers):
            return [int(n) for n in numbers]
    from pipelined.quickjson import loads  # noqa: PLC0415 - json's, without its import

    return loads(text)


# What can be wrong with a story file: a stable code (for scripts, agents and
# tests) and a message (for people, free to change). Codes never change meaning.
ERROR_CODES = {
    "unreadable": "the file could not be read (permissions, I/O)",
    "too_large": "the file is over max_file_bytes: no fields, no content",
    "not_utf8": "the file is not UTF-8",
    "empty": "the file is empty",
    "front_matter_unclosed": "an opening --- line with no closing one",
    "front_matter_syntax": "the front matter is no YAML mapping",
    "front_matter_too_large": "the front matter expands past the parser's limits",
    "bad_value": "a pipeline field holds a value of the wrong kind (it reads as null)",
    "duplicate_key": "a key appears twice; a pipeline field given twice reads as null",
    "parser_failed": "the parser itself failed on the file (a bug: report it)",
    "unknown": "stored before error codes existed (read again at the next start)",
}


class StoryError(NamedTuple):
    """One problem of one story file: `code` (a key of ERROR_CODES) and a message."""

    code: str
    message: str


def errors_to_column(errors: tuple[StoryError, ...]) -> str | None:
    """`story_extras.errors`: a JSON list of {"code", "message"} objects, or NULL."""
    if not errors:
        return None
    import json  # noqa: PLC0415 - the writer's

    return json.dumps([{"code": e.code, "message": e.message} for e in errors],
                      ensure_ascii=False)


def errors_from_column(text: str | None) -> list[dict[str, str]]:
    """The stored errors as {"code", "message"} objects. A database written before
    error codes holds bare messages: they read as code "unknown" until re-read."""
    if not text:
        return []
    from pipelined.quickjson import loads  # noqa: PLC0415 - json's, without its import

    return [{"code": "unknown", "message": e} if isinstance(e, str) else e
            for e in loads(text)]

