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
    echo_block,
    echo_lines,
    json_option,
    load_config,
    output_width,
    print_json,
    print_json_stream,
    read_conn,
    settings_options,
    shown_time,
    table,
)
from pipelined.config import resolve_stage
from pipelined.errors import AmbiguousStory, StoryNotFound
from pipelined.schema import FIELDS, SORT_KEYS
from pipelined.terminal import field_text, one_line

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["board", "ls_command", "search", "show"]

# `show`: the id and stage first, then the story fields, then the times.
SHOW_ORDER = ("id", "stage", *FIELDS, "created_at", "updated_at")


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
@click.option("--limit", type=click.IntRange(min=1), default=None,
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
    from pipelined.store import queries
    from pipelined.views import is_ready, sort_stories, unmet_dependencies

    config = load_config(root, db, stages, config_file)
    stage = resolve_stage(stage, config.stages) if stage is not None else None
    conn = read_conn(config, announce=True)
    if as_json and not ready and sort_key == "stage":  # SQLite's order: streamed
        from itertools import islice

        print_json_stream(islice(queries.iter_stories(conn, stage=stage, agent=agent,
                                                      blocked=blocked), limit))
        return
    if ready:  # dependencies may be in any stage: resolve them against every row
        everything = queries.list_stories(conn)
        unmet = unmet_dependencies(everything)
        wanted = {i["id"] for i in queries.list_stories(conn, stage=stage, agent=agent,
                                                        blocked=blocked)}
        items = [i for i in everything if i["id"] in wanted and is_ready(i, unmet[i["id"]])]
    else:
        items = queries.list_stories(conn, stage=stage, agent=agent, blocked=blocked)
    items = sort_stories(items, sort_key)[:limit]
    if as_json:
        print_json(items)
        return
    rows = [[i["id"], i["stage"], i["name"] or "", i["agent"] or "",
             "yes" if i["blocked"] else "",
             "" if i["retry_count"] is None else str(i["retry_count"])]
            for i in items]
    # Too wide for the terminal: the id (its slug repeats the name) gives up cells first,
    # down to 20, then the name, then the agent.
    click.echo(table(rows, ["ID", "STAGE", "NAME", "AGENT", "BLOCKED", "RETRIES"],
                     shrink=((0, 20), (2, 12), (3, 6))))


@click.command()
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
@json_option
def show(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str, as_json: bool) -> None:
    """Show one story: its fields and its content. ID may be just its number.

    Example: pipelined show 12
    """
    from pipelined.store import queries

    config = load_config(root, db, stages, config_file)
    conn = read_conn(config, announce=True)
    ids = queries.resolve_ref(conn, story_id)
    if len(ids) > 1:
        raise AmbiguousStory(story_id, ids)
    story = queries.get_story(conn, ids[0]) if ids else None
    if story is None:
        raise StoryNotFound(story_id)
    if as_json:
        print_json(story)
        return
    def value(key: str) -> str:
        if key.endswith("_at"):
            return shown_time(story[key])
        return field_text(story[key], "", quote=False)

    lines = [f"{key + ':':<13} {value(key)}" for key in SHOW_ORDER]
    files = story.get("files") or []
    # Paths under the root when it holds the files; as stored (relative to the root)
    # when the root is not known here (a read given only --db, from elsewhere).
    known = any((config.root / f["path"]).exists() for f in files)

    def where(rel: str) -> str:
        return str(config.root / rel) if known else rel

    winner = next((f["path"] for f in files if f["winner"]), None)
    if winner:
        lines.insert(2, f"{'path:':<13} {where(winner)}")
    lines += [f"{'conflict:':<13} also {where(f['path'])} (the newest copy wins; "
              "see `pipelined doctor`)" for f in files if not f["winner"]]
    if story["extra"]:
        import json

        from pipelined.terminal import json_text

        extra = json_text(json.dumps(story["extra"], ensure_ascii=False))
        lines.append(f"{'extra:':<13} {extra}")
    lines += [f"{'error:':<13} {e['message']} ({e['code']})" for e in story["errors"]]
    echo_lines([*lines, ""])
    echo_block(story["content"] if story["content"] is not None
               else "(content not copied: file over the size limit)")


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
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
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
    from pipelined.store.search import search as run_search

    config = load_config(root, db, stages, config_file)
    stage = resolve_stage(stage, config.stages) if stage is not None else None
    # On a terminal the matches are bold; private-use marks survive the escaping of
    # story text and become the terminal's bold after it. Elsewhere: **match**.
    bold = sys.stdout.isatty() and not as_json
    marks = ("\ue000", "\ue001") if bold else ("**", "**")
    hits = run_search(read_conn(config, announce=True), query, stage=stage, limit=limit,
                      marks=marks)
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
