r"""Story text made safe to print: no character from a story file drives a terminal.

Anyone who can write a story file chooses its id (the file name), name, agent,
extra keys and content, and the read commands print them and the daemon logs
them. A control character among them could clear the reader's screen (ESC
`[2J`), ring the bell, start a C1 escape sequence (U+009B is CSI on many
terminals) or reorder what a line shows (the bidi overrides and isolates). So
every text output of pipelined passes through one of these:

- `one_line`: a table cell, a field, a log value, an `Error:` line. Every C0
  control (newline and tab too), DEL, every C1 control and the bidi
  overrides/isolates (U+202A-U+202E, U+2066-U+2069) become visible escapes.
- `block`: a story's content, printed as a block of lines: the same, but
  newlines, tabs and CR LF line ends are kept.
- `json_text`: JSON already encoded with `ensure_ascii=False`, which leaves
  DEL, C1 and the bidi characters raw; they become `\u007f`-style escapes,
  which decode to the same value.

The escapes read like Python's: `\n`, `\t`, `\r`, `\x1b`, `\x9b`, `\u202e`. A
reader sees that something is there and what; nothing is silently dropped.
Text without such characters comes back unchanged (the same object). Every
character escaped is one `str.isprintable()` refuses (C0, DEL and C1 are
controls, the bidi characters formats, the line and paragraph separators
separators), so printable text is known safe from one C scan; only text that
is not (a tab, a newline, a soft hyphen, an emoji joined by U+200D) is
searched with a compiled pattern. `re` is imported then, not before: the read
commands' start would pay about as much for it as for the rest of their
imports (docs/benchmarks.md).

`discard_output` is the other half of printing to a stream nobody reads any
more: after a broken pipe, the file descriptor is pointed at /dev/null.

Imports only `os`: the CLI's error path and the daemon's log setup use it.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Any

__all__ = ["block", "discard_output", "end_ctrl_c_line", "field_text", "has_unsafe", "json_text",
           "one_line"]

_BIDI = "\u202a-\u202e\u2066-\u2069"
# DEL, C1, the bidi characters and the line and paragraph separators (str.splitlines
# splits on them): what JSON with ensure_ascii=False leaves raw.
_RAW_IN_JSON = f"\x7f-\x9f{_BIDI}\u2028\u2029"
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


class _Patterns:
    """The patterns, compiled at their first use."""

    def __init__(self) -> None:
        import re  # noqa: PLC0415 - only for text that is not printable as it is

        self.line = re.compile(f"[\x00-\x1f{_RAW_IN_JSON}]")
        # A lone CR moves the cursor back over the line; CR LF (a Windows line end)
        # is harmless.
        self.block = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f{_RAW_IN_JSON}]|\r(?!\n)")
        # Lines joined by newlines: only the joins may be newlines (see `has_unsafe`).
        self.lines = re.compile(f"[\x00-\x09\x0b-\x1f{_RAW_IN_JSON}]")
        self.json = re.compile(f"[{_RAW_IN_JSON}]")


_compiled: list[_Patterns] = []


def _patterns() -> _Patterns:
    if not _compiled:
        _compiled.append(_Patterns())
    return _compiled[0]


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def one_line(text: str) -> str:
    """`text` as one line: control and bidi characters, newlines and tabs escaped."""
    if text.isprintable():
        return text
    line = _patterns().line
    if line.search(text) is None:
        return text
    return line.sub(_escape, text)


def block(text: str) -> str:
    """`text` as lines: like `one_line`, but newlines, tabs and CR LF are kept."""
    if "\r" not in text and text.replace("\n", " ").replace("\t", " ").isprintable():
        return text
    pattern = _patterns().block
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def has_unsafe(text: str, newlines_ok: bool = False) -> bool:
    """True if `one_line` would change `text`, or, with `newlines_ok`, one of its lines.

    With `newlines_ok` the caller, who joined lines with newlines, must still
    count them: a newline inside one of the lines is not seen here.
    """
    if (text.replace("\n", " ") if newlines_ok else text).isprintable():
        return False
    pattern = _patterns().lines if newlines_ok else _patterns().line
    return pattern.search(text) is not None


def json_text(encoded: str) -> str:
    """JSON text with DEL, C1 and bidi characters as `\\uXXXX` escapes.

    Valid for any JSON document: outside strings JSON is ASCII without DEL,
    so these characters only occur inside strings, where the escape stands for
    the same character.
    """
    if encoded.isascii() and "\x7f" not in encoded:  # isascii() is a flag, `in` a memchr
        return encoded
    pattern = _patterns().json
    if pattern.search(encoded) is None:
        return encoded
    return pattern.sub(_json_escape, encoded)


def discard_output(stream: Any) -> None:
    """Point `stream`'s file descriptor at /dev/null once its reader has gone.

    What is still buffered then flushes into nothing, instead of failing again
    at exit (an "Exception ignored" message, and exit status 120). A stream
    without a file descriptor (a test's capture) is left alone.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def end_ctrl_c_line() -> None:
    """After Ctrl-C on a terminal, which echoed `^C`: end that line, so what is printed
    next starts on its own (not `^C2026-11-29 …`)."""
    try:
        if os.isatty(2):
            os.write(2, b"\n")
    except OSError:
        pass


def field_text(value: Any, none: str = "(none)", quote: bool = True) -> str:
    """A story field's value for people: yes/no for a flag, `[10, 12]` for a list,
    `none` when unset, and with `quote` a text with a blank in it between quotes (so
    `name "Log in" -> "Log out"` reads as two values). One form for `show`, `log`
    and the edit commands' old -> new."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    text = str(value)
    if quote and isinstance(value, str) and (not text or any(c.isspace() for c in text)):
        import json  # noqa: PLC0415 - the read commands' start does without it

        return json.dumps(text, ensure_ascii=False)
    return text
