"""What several commands share: the settings options, `--json`, the config,
the read-only database, JSON, table and line output.

Every output helper here makes story text safe for a terminal (see
`pipelined.terminal`): a read command prints through them, never with a bare
`click.echo` of story text.

Kept cheap to import (click and `pipelined.terminal`, which is `re` only; the
config and json load on first use): every command, `--help` and each
shell-completion request import it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipelined.errors import DatabaseError
from pipelined.terminal import block, has_unsafe, json_text, one_line

if TYPE_CHECKING:
    from pipelined.config import Config

__all__ = [
    "echo_block",
    "echo_line",
    "echo_lines",
    "json_option",
    "load_config",
    "print_json",
    "read_conn",
    "settings_options",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """--root, --db, --stages, --config: where the stories and the database are."""
    func = click.option("--config", "config_file", type=click.Path(path_type=Path),
                        help="TOML config file (default: $PIPELINED_CONFIG or "
                             "~/.config/pipelined/config.toml if present).")(func)
    func = click.option("--stages", default=None,
                        help="Comma-separated stage folders to watch "
                             "(default 1_backlog,2_current,4_merge).")(func)
    func = click.option("--db", type=click.Path(path_type=Path), default=None,
                        help="SQLite database (default: named after the root in the "
                             "state directory).")(func)
    func = click.option("--root", type=click.Path(path_type=Path), default=None,
                        help="Folder holding the stage folders (default: current folder).")(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (shapes: docs/commands.md; ignore unknown keys).")(func)


def load_config(root: Path | None, db: Path | None, stages: str | None,
                config_file: Path | None, **extra: object) -> Config:
    """The config from the settings options (and any command's own flags in `extra`)."""
    from pipelined.config import resolve

    return resolve({"root": root, "db": db, "stages": stages, **extra}, config_file=config_file)


def read_conn(config: Config, announce: bool = False) -> Any:
    """A read-only connection to the database; DatabaseError if it is not ours.

    With `announce` (the read commands), a database no daemon keeps up to date, or
    one whose daemon is not `ready`, is said in one line on stderr: what is printed
    may be old. stdout, `--json` included, is the same either way.
    """
    from pipelined.store import queries
    from pipelined.store.connection import open_read_only
    from pipelined.store.preflight import check_before_reading

    check_before_reading(config.db_path)  # a foreign WAL file: no -wal/-shm made beside it
    conn = open_read_only(config.db_path)
    if not queries.table_exists(conn, "pipeline_items"):
        raise DatabaseError(config.db_path, "not a pipelined database (no pipeline_items)")
    if announce:
        _announce_staleness(config, conn)
    return conn


STALE_NOTE = "pipelined.stale_note"  # click's ctx.meta key: the line, for a command that succeeds


def _announce_staleness(config: Config, conn: Any) -> None:
    """Leave the note for `PipelinedGroup` to print once the command has succeeded (a
    failing command's one `Error:` line stays alone)."""
    from pipelined.freshness import freshness

    fresh = freshness(config.db_path, conn)
    context = click.get_current_context(silent=True)
    if fresh["state"] != "ready" and context is not None:
        last = fresh["last_sync"] or "never"
        context.meta[STALE_NOTE] = one_line(f"note: {fresh['note']} (last sync {last})")


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
        click.echo(json_text(json.dumps(value, indent=2, ensure_ascii=False)))


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
            click.echo(json_text(("[\n" if not started else ",\n") + ",\n".join(lines)),
                       nl=False)
            started, lines = True, []
    if lines:
        click.echo(json_text(("[\n" if not started else ",\n") + ",\n".join(lines)), nl=False)
        started = True
    click.echo("\n]" if started else "[]")


def echo_line(text: str) -> None:
    """Print `text` as one line, story text escaped (`terminal.one_line`)."""
    click.echo(one_line(text))


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
    click.echo(text)


def echo_block(text: str) -> None:
    """Print multi-line text (a story's content): newlines and tabs kept, controls escaped."""
    click.echo(block(text))


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
    import shutil

    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


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
    widths = [max(measure(h), *(measure(r[i]) for r in rows)) if rows
              else measure(h) for i, h in enumerate(headers)]
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
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                         for r in [headers, *rows])

    def padded(cell: str, room: int) -> str:
        shown = cut(cell, room)
        return shown + " " * (room - cell_width(shown))

    return "\n".join("  ".join(padded(c, w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [headers, *rows])


# -- shell completion ------------------------------------------------------------------


def _completion_config(ctx: click.Context) -> Config | None:
    """The settings the command line typed so far names, or None if they are bad."""
    params = ctx.params
    try:
        return load_config(params.get("root"), params.get("db"), params.get("stages"),
                           params.get("config_file"))
    except Exception:
        return None


def complete_story_id(ctx: click.Context, _param: click.Parameter,
                      incomplete: str) -> list[str]:
    """Story ids starting with what was typed, from the database (read-only, indexed)."""
    config = _completion_config(ctx)
    if config is None or not config.db_path.is_file():
        return []
    try:
        from pipelined.store.connection import open_read_only

        conn = open_read_only(config.db_path)
        try:
            rows = conn.execute(
                "SELECT id FROM pipeline_items WHERE id >= ? AND id < ? ORDER BY id LIMIT 200",
                (incomplete, incomplete + "\U0010ffff")).fetchall()
        finally:
            conn.close()
    except Exception:
        return []
    return [str(row[0]) for row in rows]


def complete_stage(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Stage folders and their aliases starting with what was typed."""
    config = _completion_config(ctx)
    stages = config.stages if config is not None else ()
    names = [*stages, *(s.split("_", 1)[1] for s in stages if "_" in s)]
    return [name for name in names if name.startswith(incomplete)]
