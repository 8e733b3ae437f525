"""Printing a read command's output: JSON, tables, lines and blocks, all safe to print.

Every helper here makes story text safe for a terminal (see `pipelined.terminal`):
a read command prints through them, never with a bare write of story text. No
click: the read commands' quick path (`commands.quick`) prints through them
too, and must not pay for importing it. Each call writes and flushes, so a
closed pipe shows up inside the command, where `commands.exits` makes it a
clean end, not at the interpreter's exit.

A read command whose data may be old leaves a note (`leave_note`); the caller
that ran it prints it on stderr after the output, and only if the command
succeeded (`take_note`).
"""

from __future__ import annotations

import os
import sys

from pipelined.terminal import block, has_unsafe, json_text, one_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "cell_width",
    "cut",
    "echo",
    "echo_block",
    "echo_line",
    "echo_lines",
    "leave_note",
    "output_width",
    "print_json",
    "print_json_stream",
    "shown_time",
    "table",
    "take_note",
]

_notes: list[str] = []  # the read command's lines about what it could not show as it is


def leave_note(line: str) -> None:
    """Say `line` on stderr once the command has printed its output and succeeded."""
    _notes.append(one_line(line))


def take_note() -> str | None:
    """The notes a command left, one per line, and forget them (a second run in-process
    starts clean)."""
    note = "\n".join(_notes) if _notes else None
    _notes.clear()
    return note


def echo(text: str, nl: bool = True) -> None:
    """`text` (already safe) on stdout, flushed."""
    out = sys.stdout
    out.write(text + "\n" if nl else text)
    out.flush()


def print_json(value: object) -> None:
    """An object indented; a list one element per line.

    json's C encoder is used only without `indent` (an indented list of many
    stories goes through the far slower pure-Python one). One compact element per line is
    as easy to read and grep, and still one JSON document. Non-ASCII text stays
    readable, but DEL, C1 and bidi characters are escaped (`json_text`).
    """
    import json

    if isinstance(value, list) and value:
        print_json_stream(value)
    else:
        echo(json_text(json.dumps(value, indent=2, ensure_ascii=False)))


def print_json_stream(items: Iterable[object], chunk: int = 2000) -> None:
    """What `print_json(list(items))` prints, written as the items come, `chunk`
    lines at a time: a list of 100,000 stories is never held whole."""
    import json

    encode = json.JSONEncoder(ensure_ascii=False).encode
    lines: list[str] = []
    started = False
    for item in items:
        lines.append("  " + encode(item))
        if len(lines) >= chunk:
            echo(json_text(("[\n" if not started else ",\n") + ",\n".join(lines)),
                       nl=False)
            started, lines = True, []
    if lines:
        echo(json_text(("[\n" if not started else ",\n") + ",\n".join(lines)), nl=False)
        started = True
    echo("\n]" if started else "[]")


def echo_line(text: str) -> None:
    """Print `text` as one line, story text escaped (`terminal.one_line`)."""
    echo(one_line(text))


def echo_lines(lines: Sequence[str]) -> None:
    """Print each of `lines` as one line, story text escaped (`terminal.one_line`).

    One scan of the joined text finds the rare line that needs escaping, so a
    `log` of 100,000 rows pays one regular-expression pass, not one per line.
    """
    if not lines:
        return
    text = "\n".join(lines)
    if has_unsafe(text, newlines_ok=True) or text.count("\n") != len(lines) - 1:
        text = "\n".join(one_line(line) for line in lines)
    echo(text)


def echo_block(text: str) -> None:
    """Print multi-line text (a story's content): newlines and tabs kept, controls escaped."""
    echo(block(text))


def table(rows: list[list[str]], headers: list[str],
          shrink: Sequence[tuple[int, int]] = ()) -> str:
    """Left-aligned columns two spaces apart, no trailing blanks; cells safe to print.

    A cell with a control character (a newline, ESC...) is escaped before the
    widths are measured, so the columns still line up. The check is one scan
    of the finished table: the usual table is laid out once.

    On a terminal the table fits its width: the columns
    in `shrink`, (index, narrowest width) pairs in the order given, give up
    cells, and a cut cell ends in `…`. Widths are terminal cells (a CJK
    character or an emoji takes two). Into a pipe every cell is whole.
    """
    text = "\n".join(" ".join(r) for r in [headers, *rows])
    if has_unsafe(text, newlines_ok=True) or text.count("\n") != len(rows):
        rows = [[one_line(cell) for cell in row] for row in rows]
        headers = [one_line(header) for header in headers]
    return _layout(rows, headers, shrink, output_width(), text.isascii())


def shown_time(at: str | None) -> str:
    """A stored RFC 3339 time as printed: relative (`3 min ago`) on a terminal, as
    stored into a pipe or a file (`--json` always has it as stored)."""
    if not at:
        return "never"
    if not sys.stdout.isatty():
        return at
    from pipelined.history import relative

    return relative(at)


def output_width() -> int | None:
    """The terminal's width when stdout is one (`$COLUMNS` first), else None: into a
    pipe or a file every cell is whole."""
    if not sys.stdout.isatty():
        return None
    # shutil.get_terminal_size's columns, without importing shutil (fnmatch, re, enum).
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def cell_width(text: str) -> int:
    """How many terminal cells `text` takes."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def cut(text: str, width: int) -> str:
    """`text` in at most `width` cells, ending in `…` when cut."""
    if cell_width(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        size = cell_width(char)
        if used + size > width - 1:
            break
        kept.append(char)
        used += size
    return "".join(kept) + "…"


def _layout(rows: list[list[str]], headers: list[str], shrink: Sequence[tuple[int, int]],
            width: int | None, ascii_only: bool) -> str:
    measure = len if ascii_only else cell_width
    widths = [max(map(measure, column)) for column in zip(headers, *rows, strict=True)]
    full = list(widths)
    if width is not None:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        for index, narrowest in shrink:
            if excess <= 0:
                break
            give = min(excess, max(0, widths[index] - narrowest))
            widths[index] -= give
            excess -= give

    if ascii_only and widths == full:  # the usual case, and a 100,000-row `ls`: no cell cut
        line = "  ".join(f"{{:<{w}}}" for w in widths).format  # one call per row
        return "\n".join(line(*r).rstrip() for r in [headers, *rows])

    def padded(cell: str, room: int) -> str:
        shown = cut(cell, room)
        return shown + " " * (room - cell_width(shown))

    return "\n".join("  ".join(padded(c, w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [headers, *rows])
