"""The read commands most often typed, `ls`, `show` and `status`, without click.

Each is a plain function of the config and the command's own options, called
by its click command and by the quick path (`commands.quick`), which skips
click when the command line is a simple one: both print the same, because
it is the same code. Also the two steps every read command starts with: the
config from the settings options, and the read-only database.
"""

from __future__ import annotations

import os

from pipelined.commands.output import (
    echo,
    echo_block,
    echo_line,
    echo_lines,
    leave_note,
    print_json,
    print_json_stream,
    shown_time,
    table,
)
from pipelined.errors import AmbiguousStory, DatabaseError, StoryNotFound
from pipelined.paths import clean_path
from pipelined.schema import FIELDS
from pipelined.settings import resolve_stage
from pipelined.terminal import field_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from pipelined.config import Config
    from pipelined.settings import Where

__all__ = ["list_stories", "load_config", "read_conn", "show_status", "show_story"]

# `show`: the id and stage first, then the story fields, then the times.
SHOW_ORDER = ("id", "stage", *FIELDS, "created_at", "updated_at")


def load_config(root: Path | None, db: Path | None, stages: str | None,
                config_file: Path | None, **extra: object) -> Config:
    """The config from the settings options (and any command's own flags in `extra`)."""
    from pipelined.config import resolve

    return resolve({"root": root, "db": db, "stages": stages, **extra}, config_file=config_file)


def read_conn(config: Where, announce: bool = False) -> Any:
    """A read-only connection to the database; DatabaseError if it is not ours.

    With `announce` (the read commands), a database no daemon keeps up to date, or
    one whose daemon is not `ready`, is said in one line on stderr after the
    output (`output.leave_note`): what is printed may be old. stdout, `--json`
    included, is the same either way.
    """
    from pipelined.store import queries
    from pipelined.store.connection import open_read_only
    from pipelined.store.preflight import check_before_reading

    check_before_reading(config.db_path)  # a foreign WAL file: no -wal/-shm made beside it
    conn = open_read_only(config.db_path)
    if not queries.table_exists(conn, "pipeline_items"):
        raise DatabaseError(config.db_path, "not a pipelined database (no pipeline_items)")
    if announce:
        from pipelined.freshness import freshness

        fresh = freshness(config.db_path, conn)
        if fresh["state"] != "ready":
            leave_note(f"note: {fresh['note']} (last sync {fresh['last_sync'] or 'never'})")
    return conn


def list_stories(config: Where, *, stage: str | None = None, agent: str | None = None,
                 blocked: bool | None = None, ready: bool = False, sort_key: str = "stage",
                 limit: int | None = None, as_json: bool = False) -> None:
    """`pipelined ls`: the stories, filtered and sorted, as a table or JSON."""
    from pipelined.store import queries

    stage = resolve_stage(stage, config.stages) if stage is not None else None
    conn = read_conn(config, announce=True)
    if not ready and sort_key == "stage":  # SQLite's order (an index): nothing to sort
        from itertools import islice

        if as_json:  # streamed: 100,000 stories are never held whole
            print_json_stream(islice(queries.iter_stories(conn, stage=stage, agent=agent,
                                                          blocked=blocked), limit))
            return
        cells = islice(queries.iter_columns(conn, TABLE_COLUMNS, stage=stage, agent=agent,
                                            blocked=blocked), limit)
        _print_table([_row(*row) for row in cells])
        return
    from pipelined.views import is_ready, sort_stories, unmet_dependencies

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
    _print_table([_row(*(i[name] for name in TABLE_COLUMNS)) for i in items])


# `ls`'s table: these columns, shown by `_row`.
TABLE_COLUMNS = ("id", "stage", "name", "agent", "blocked", "retry_count")


def _row(story_id: str, stage: str, name: str | None, agent: str | None,
         blocked: object, retry_count: int | None) -> list[str]:
    return [story_id, stage, name or "", agent or "", "yes" if blocked else "",
            "" if retry_count is None else str(retry_count)]


def _print_table(rows: list[list[str]]) -> None:
    # Too wide for the terminal: the id (its slug repeats the name) gives up cells first,
    # down to 20, then the name, then the agent.
    echo(table(rows, ["ID", "STAGE", "NAME", "AGENT", "BLOCKED", "RETRIES"],
               shrink=((0, 20), (2, 12), (3, 6))))


def show_story(config: Where, ref: str, as_json: bool = False) -> None:
    """`pipelined show`: one story by id or number, its fields and its content."""
    from pipelined.store import queries

    conn = read_conn(config, announce=True)
    ids = queries.resolve_ref(conn, ref)
    if len(ids) > 1:
        raise AmbiguousStory(ref, ids)
    story = queries.get_story(conn, ids[0]) if ids else None
    if story is None:
        raise StoryNotFound(ref)
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
    known = any(os.path.exists(os.path.join(config.root, f["path"])) for f in files)

    def where(rel: str) -> str:
        return clean_path(os.path.join(config.root, rel)) if known else rel

    winner = next((f["path"] for f in files if f["winner"]), None)
    if winner:
        lines.insert(2, f"{'path:':<13} {where(winner)}")
    lines += [f"{'conflict:':<13} also {where(f['path'])} (the newest copy wins; "
              "see `pipelined doctor`)" for f in files if not f["winner"]]
    if story["extra"]:
        from pipelined.quickjson import dumps
        from pipelined.terminal import json_text

        extra = json_text(dumps(story["extra"]))
        lines.append(f"{'extra:':<13} {extra}")
    lines += [f"{'error:':<13} {e['message']} ({e['code']})" for e in story["errors"]]
    echo_lines([*lines, ""])
    echo_block(story["content"] if story["content"] is not None
               else "(content not copied: file over the size limit)")


def show_status(config: Where, as_json: bool = False) -> None:
    """`pipelined status`: the daemon, the stories per stage, the last sync."""
    from pipelined.freshness import pipeline_status

    result = pipeline_status(config.db_path, read_conn(config))
    pid, counts = result["pid"], result["stages"]
    if as_json:
        print_json(result)
        return
    daemon_line = f"{result['state']} (pid {pid})" if pid else "not running"
    if result["uptime_s"] is not None:
        daemon_line += f", up {result['uptime_s']} s"
    echo_line(f"daemon:    {daemon_line}")
    if result["writer_error"]:
        echo_line(f"degraded:  {result['writer_error']} "
                  f"({result['pending_batches']} batches waiting in memory)")
    for problem in result["folder_problems"]:
        echo_line(f"degraded:  {problem}")
    if result["log_lines_dropped"]:
        echo_line(f"logs:      {result['log_lines_dropped']} lines could not be written "
                  "(nobody reads the daemon's stderr)")
    echo_line(f"database:  {os.fspath(config.db_path)}")
    echo_line(f"last sync: {shown_time(result['last_sync'])}")
    echo(f"stories:   {result['stories']}")
    for stage, count in counts.items():
        echo_line(f"  {stage:<12} {count}")
