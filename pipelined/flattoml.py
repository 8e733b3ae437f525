"""A flat TOML file read without `tomllib`, when it is as simple as pipelined's own.

`tomllib` imports `re` and `datetime` (and `re` imports `enum`): reading the
`pipelined.toml` that `pipelined init` writes at every root cost a read command
as much as everything else it imports (docs/benchmarks.md). That file, like
`pipelined/config.sample.toml`, is comments, blank lines and `key = value`
lines. `loads` reads exactly such a file: a bare key, then one of a basic or
literal string without escapes, a whole number, a decimal number, `true`,
`false`, or a one-line array of such basic strings, and maybe a comment after
it. Anything else in the file (a table, an escape, a date, a duplicate key, a
stray control character, anything `tomllib` would refuse) makes it return None, and
the caller reads the file with `tomllib`: for every file it takes, the result
is `tomllib.loads`'s (tests/test_lean_read_path.py compares them).
"""

from __future__ import annotations

__all__ = ["loads"]

_NOT_SIMPLE = object()
_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_DIGITS = frozenset("0123456789")
_MAX_DIGITS = 18  # a TOML integer is 64-bit: longer ones are tomllib's to judge


def _string(text: str) -> object:
    """A basic ("...") or literal ('...') string with nothing to unescape."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'":
        return _NOT_SIMPLE
    inner = text[1:-1]
    if text[0] in inner or "\\" in inner or not inner.replace("\t", " ").isprintable():
        return _NOT_SIMPLE
    return inner


def _whole(text: str) -> bool:
    digits = text[1:] if text.startswith("-") else text
    return (0 < len(digits) <= _MAX_DIGITS and set(digits) <= _DIGITS
            and (digits == "0" or digits[0] != "0"))


def _value(text: str) -> object:
    if text in ("true", "false"):
        return text == "true"
    if text[0] in "\"'":
        return _string(text)
    if _whole(text):
        return int(text)
    whole, dot, fraction = text.partition(".")
    if dot and _whole(whole) and fraction and set(fraction) <= _DIGITS:
        return float(text)
    if text.startswith("[") and text.endswith("]"):
        items = [item.strip(" \t") for item in text[1:-1].split(",")]
        if items[-1] == "":  # `[]`, or a trailing comma
            items.pop()
        values = [_string(item) if item[:1] == '"' else _NOT_SIMPLE for item in items]
        return _NOT_SIMPLE if _NOT_SIMPLE in values else values
    return _NOT_SIMPLE


def _without_comment(value: str) -> str:
    """The value before a comment that follows it (`root = "."  # this folder`): a
    string ends at its closing quote, an array at its first `]`, anything else at a
    blank or `#`. "" when what follows is no comment."""
    if not value:
        return ""
    if value[0] in "\"'":
        end = value.find(value[0], 1) + 1
    elif value[:1] == "[":
        end = value.find("]") + 1
    else:
        end = next((i for i, c in enumerate(value) if c in " \t#"), len(value))
    if end <= 0:
        return ""
    rest = value[end:].lstrip(" \t")
    return value[:end] if not rest or rest.startswith("#") else ""


def loads(text: str) -> dict[str, object] | None:
    """What `tomllib.loads(text)` gives, for a file of only comments, blank lines and
    simple `key = value` lines; None for any other file."""
    if "\r" in text.replace("\r\n", "\n") or not text.replace("\t", " ").replace(
            "\r\n", " ").replace("\n", " ").isprintable():
        return None  # a lone CR, a control character: tomllib's to refuse
    values: dict[str, object] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        key, value = key.rstrip(" \t"), _without_comment(value.lstrip(" \t"))
        if not equals or not key or not set(key) <= _BARE_KEY or key in values or not value:
            return None
        parsed = _value(value)
        if parsed is _NOT_SIMPLE:
            return None
        values[key] = parsed
    return values
