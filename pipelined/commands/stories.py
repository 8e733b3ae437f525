"""`ls`, `show`, `board` and `search`: the stories as they are now, read-only.

They must start fast: no watchdog, no pycrdt, and rich only for the board's
text output. Text output goes through the helpers in `commands.common` (or,
for the board, `terminal.one_line`), which escape control characters from
story files.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pipelined.commands.common import (
    complete_stage,
    complete_story_id,
    cut,
    int_from,
    json_option,
    load_config,
    output_width,
    print_json,
    read_conn,
    settings_options,
    table,
)
from pipelined.config import resolve_stage
from pipelined.schema import SORT_KEYS
from pipelined.terminal import one_line

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["board", "ls_command", "search", "show"]


@click.command(name="ls")
@settings_options
@click.option("--stage", default=None, shell_complete=complete_stage,
              help="Only stories in this stage.")
@click.option("--agent", default=None, help="Only stories of this agent.")
@click.option("--blocked/--not-blocked", default=None, help="Only blocked (or unblocked) ones.")
@click.option("--ready", is_flag=True,
              help="Only stories that are not blocked and whose dependencies are all in a "
                   "later stage (or gone).")
@click.option("--sort", "sort_key", type=click.Choice(SORT_KEYS), default="stage",
              show_default=True,
              help="Order: stage then number, number, name; updated/created newest first.")
@click.option("--limit", type=int_from(1), default=None,
              help="At most this many stories (after filtering and sorting).")
@json_option
def ls_command(root: Path | None, db: Path | None, stages: str | None,
               config_file: Path | None, stage: str | None, agent: str | None,
               blocked: bool | None, ready: bool, sort_key: str, limit: int | None,
               as_json: bool) -> None:
    """List stories, by stage then number.

    Example: pipelined ls --stage 2_current --agent coder-1

    Example: pipelined ls --ready --sort id --limit 5
    """
    from pipelined.commands.readout import list_stories

    list_stories(load_config(root, db, stages, config_file), stage=stage, agent=agent,
                 blocked=blocked, ready=ready, sort_key=sort_key, limit=limit, as_json=as_json)


@click.command()
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
@json_option
def show(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str, as_json: bool) -> None:
    """Show one story: its fields and its content. ID may be just its number.

    Example: pipelined show 12
    """
    from pipelined.commands.readout import show_story

    show_story(load_config(root, db, stages, config_file), story_id, as_json)


@click.command()
@settings_options
@json_option
def board(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
          as_json: bool) -> None:
    """Show a kanban board: one column per stage, one card per story.

    Cards show the number, name, agent, a [blocked] mark and the dependencies
    not yet in a later stage ("waits on #12").

    Example: pipelined board --stages 1_backlog,2_current
    """
    from pipelined.store import queries
    from pipelined.views import board_columns

    config = load_config(root, db, stages, config_file)
    conn = read_conn(config, announce=True)
    columns = board_columns(queries.list_stories(conn), config.stages)
    if as_json:
        print_json({"columns": columns})
        return
    from rich.console import Console

    from pipelined.board import render_board

    render_board(columns, Console())


@click.command()
@settings_options
@click.argument("query")
@click.option("--stage", default=None, shell_complete=complete_stage,
              help="Only stories in this stage.")
@click.option("--limit", type=int_from(1), default=20, show_default=True,
              help="At most this many results, best first.")
@json_option
def search(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           query: str, stage: str | None, limit: int, as_json: bool) -> None:
    """Full-text search over ids, names and content, best match first.

    Plain words need no quoting: every word must match, accents and case are
    ignored, `log*` is a prefix. A query with a double quote, AND/OR/NOT,
    NEAR(...), parentheses or `name:` is passed to SQLite FTS5 as written.

    Example: pipelined search "login form" --stage 2_current
    """
    from pipelined.commands.output import leave_note
    from pipelined.store.search import BUILDING_NOTE, index_building
    from pipelined.store.search import search as run_search

    config = load_config(root, db, stages, config_file)
    stage = resolve_stage(stage, config.stages) if stage is not None else None
    # On a terminal the matches are bold; private-use marks survive the escaping of
    # story text and become the terminal's bold after it. Elsewhere: **match**.
    bold = sys.stdout.isatty() and not as_json
    marks = ("\ue000", "\ue001") if bold else ("**", "**")
    conn = read_conn(config, announce=True)
    hits = run_search(conn, query, stage=stage, limit=limit, marks=marks)
    if index_building(conn):
        leave_note(f"note: {BUILDING_NOTE}")
    if as_json:
        print_json([hit.as_dict() for hit in hits])
        return
    heads = table([[h.id, h.stage, h.name or ""] for h in hits], ["ID", "STAGE", "NAME"],
                  shrink=((2, 12), (0, 20))).split("\n")[1:]
    width = output_width()
    lines = []
    for head, hit in zip(heads, hits, strict=True):
        snippet = one_line(hit.snippet)
        if width is not None:
            snippet = cut(snippet, max(20, width - 4))
        if bold:
            snippet = snippet.replace(marks[0], "\x1b[1m").replace(marks[1], "\x1b[22m")
            snippet += "\x1b[22m" if snippet.count("\x1b[1m") > snippet.count("\x1b[22m") else ""
        lines += [head, f"    {snippet}"]
    if lines:
        click.echo("\n".join(lines))
    if not hits:
        click.echo("no match", err=True)
