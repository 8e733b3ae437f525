"""What several commands share: the settings options, `--json` and shell completion,
and (from the click-free `output` and `readout`) the config, the read-only
database and the output helpers.

Every output helper makes story text safe for a terminal (see
`pipelined.terminal`): a read command prints through them, never with a bare
`click.echo` of story text.

Kept cheap to import (click, `output` and `readout`; the config and json load
on first use): every command, `--help` and each shell-completion request import it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pipelined.commands.output import (
    cut,
    echo_block,
    echo_line,
    echo_lines,
    output_width,
    print_json,
    print_json_stream,
    shown_time,
    table,
)
from pipelined.commands.readout import load_config, read_conn

if TYPE_CHECKING:
    from pipelined.config import Config

__all__ = [
    "complete_stage",
    "complete_story_id",
    "cut",
    "echo_block",
    "echo_line",
    "echo_lines",
    "json_option",
    "load_config",
    "output_width",
    "print_json",
    "print_json_stream",
    "read_conn",
    "read_token",
    "settings_options",
    "shown_time",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])

# SQLite's integers (and `itertools.islice`) stop at 2**63 - 1: a count or sequence
# number beyond it is a bad command line (one line, exit 2), not a traceback.
LARGEST_INT = 2**63 - 1


def int_from(least: int) -> click.IntRange:
    """An integer option's type: from `least` to LARGEST_INT."""
    return click.IntRange(min=least, max=LARGEST_INT)


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


def read_token(path: Path, min_length: int = 16) -> str:
    """The secret in a token file: one line, no spaces, at least `min_length` characters;
    ConfigError naming the file otherwise."""
    from pipelined.errors import ConfigError

    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("token-file", str(path), f"cannot read it ({exc})") from None
    if len(token) < min_length or any(c.isspace() for c in token):
        least = f"at least {min_length} characters" if min_length > 1 else "not empty"
        raise ConfigError("token-file", str(path),
                          f"the token must be one line, {least}, no spaces")
    return token


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
