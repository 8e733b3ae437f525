"""The `pipelined` command line: one click function per command.

Read commands open the database read-only and import only what they use (no
watchdog, no pycrdt), so they are fast and work whether or not the daemon
runs. Every `PipelinedError` becomes one `Error: ...` line and a non-zero exit
here, in `PipelinedGroup.invoke`, and nowhere else.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipelined import __version__
from pipelined.config import Config, resolve
from pipelined.errors import DatabaseError, PipelinedError, StoryNotFound

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
SORT_CHOICES = ("stage", "id", "name", "updated", "created")  # views.SORT_KEYS, kept light
STORY_TYPES = ("story", "bug", "spike", "refactor")  # authoring.STORY_TYPES
MOVE_WAIT_S = 10.0


class PipelinedGroup(click.Group):
    """Turns every user-caused error into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelinedError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # a bad flag or value: one line, not a usage block
            sub = exc.ctx.info_name if exc.ctx and exc.ctx.parent else None
            command = f"pipelined {sub}" if sub else "pipelined"
            click.echo(f"Error: {exc.format_message()} (see `{command} --help`)", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `pipelined ls | head`
            sys.exit(0)


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
                        help="Print JSON (documented in the README; ignore unknown fields).")(func)


def _config(root: Path | None, db: Path | None, stages: str | None,
            config_file: Path | None, **extra: object) -> Config:
    return resolve({"root": root, "db": db, "stages": stages, **extra}, config_file=config_file)


def _read_conn(config: Config) -> Any:
    from pipelined.store.connection import open_read_only

    conn = open_read_only(config.db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "pipeline_items" not in tables:
        raise DatabaseError(config.db_path, "not a pipelined database (no pipeline_items)")
    return conn


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


@click.group(cls=PipelinedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pipelined")
def main() -> None:
    """Keep a folder of markdown stories live in a pycrdt document and SQLite.

    Run `pipelined run` in the folder holding 1_backlog/, 2_current/ and
    4_merge/; query it with `pipelined ls`, `show`, `status` and `doctor`.
    """


@main.command()
@settings_options
@click.option("--settle-ms", type=int, default=None,
              help="Quiet time across the tree before a flush (default 100).")
@click.option("--max-file-bytes", type=int, default=None,
              help="Larger story files are tracked but not copied (default 1 MiB).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json", "logfmt"]),
              default=None, help="Log format (default: console on a terminal, else JSON).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default=None, help="Log level (default info).")
def run(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
        settle_ms: int | None, max_file_bytes: int | None, log_format: str | None,
        log_level: str | None) -> None:
    """Run the daemon in the foreground (what systemd starts).

    Example: pipelined run --root ~/work/stories
    """
    def load() -> Config:  # again on SIGHUP: the same flags over a fresh config file
        return _config(root, db, stages, config_file, settle_ms=settle_ms,
                       max_file_bytes=max_file_bytes, log_format=log_format, log_level=log_level)

    config = load()
    from pipelined.daemon import Daemon
    from pipelined.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a daemon that
    # seems stuck, the one question an operator (or a test) needs answered.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(Daemon(config, reload_config=load).run())


@main.command()
@settings_options
@json_option
def status(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           as_json: bool) -> None:
    """Is a daemon running on this database; stories per stage; last sync.

    Example: pipelined status --json
    """
    from pipelined.store import queries
    from pipelined.store.heartbeat import STALE_AFTER_S, read_heartbeat
    from pipelined.store.lock import holder

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
    pid = holder(config.db_path)
    counts = queries.counts_by_stage(conn)
    info = queries.meta(conn)
    beat = read_heartbeat(config.db_path) if pid is not None else None
    if beat is not None and beat.get("pid") != pid:
        beat = None  # left by an earlier daemon
    result = {
        "db": str(config.db_path),
        "running": pid is not None,
        "pid": pid,
        "state": _daemon_state(pid, beat, STALE_AFTER_S),
        "uptime_s": (round(time.time() - beat["started_unix"]) if beat else None),
        "writer_error": beat.get("writer_error") if beat else None,
        "pending_batches": beat.get("pending_batches") if beat else None,
        "stat_pass_owed": beat.get("stat_pass_owed") if beat else None,
        "stories": sum(counts.values()),
        "stages": counts,
        "last_sync": info.get("last_sync"),
    }
    if as_json:
        _print_json(result)
        return
    daemon_line = f"{result['state']} (pid {pid})" if pid else "not running"
    if result["uptime_s"] is not None:
        daemon_line += f", up {result['uptime_s']} s"
    click.echo(f"daemon:    {daemon_line}")
    if result["writer_error"]:
        click.echo(f"degraded:  {result['writer_error']} "
                   f"({result['pending_batches']} batches waiting in memory)")
    click.echo(f"database:  {config.db_path}")
    click.echo(f"last sync: {result['last_sync'] or 'never'}")
    click.echo(f"stories:   {result['stories']}")
    for stage, count in counts.items():
        click.echo(f"  {stage:<12} {count}")


def _daemon_state(pid: int | None, beat: dict[str, Any] | None, stale_after_s: float) -> str:
    """stopped, starting, ready, degraded or not responding (from the heartbeat)."""
    if pid is None:
        return "stopped"
    if beat is None:
        return "starting"
    if beat["age_s"] > stale_after_s:
        return "not responding"
    if beat.get("degraded"):
        return "degraded"
    return "ready" if beat.get("ready") else "starting"


@main.command(name="ls")
@settings_options
@click.option("--stage", default=None, help="Only stories in this stage.")
@click.option("--agent", default=None, help="Only stories of this agent.")
@click.option("--blocked/--not-blocked", default=None, help="Only blocked (or unblocked) ones.")
@click.option("--ready", is_flag=True,
              help="Only stories that are not blocked and whose dependencies are all in a "
                   "later stage (or gone).")
@click.option("--sort", "sort_key", type=click.Choice(SORT_CHOICES), default="stage",
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

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
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
        _print_json(items)
        return
    rows = [[i["id"], i["stage"], i["name"] or "", i["agent"] or "",
             "yes" if i["blocked"] else "",
             "" if i["retry_count"] is None else str(i["retry_count"])]
            for i in items]
    click.echo(_table(rows, ["ID", "STAGE", "NAME", "AGENT", "BLOCKED", "RETRIES"]))


@main.command()
@settings_options
@click.argument("story_id")
@json_option
def show(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str, as_json: bool) -> None:
    """Show one story: its fields and its content. ID may be just its number.

    Example: pipelined show 12
    """
    from pipelined.store import queries

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
    story = queries.get_story(conn, story_id)
    if story is None and story_id.isdigit():
        match = conn.execute("SELECT id FROM pipeline_items WHERE id GLOB ? ORDER BY id",
                             (f"{int(story_id)}_*",)).fetchall()
        if len(match) == 1:
            story = queries.get_story(conn, match[0][0])
    if story is None:
        raise StoryNotFound(story_id)
    if as_json:
        _print_json(story)
        return
    for key in ("id", "stage", "name", "agent", "retry_count", "blocked", "depends_on",
                "created_at", "updated_at"):
        value = story[key]
        click.echo(f"{key + ':':<13} {'' if value is None else value}")
    if story["extra"]:
        click.echo(f"{'extra:':<13} {json.dumps(story['extra'], ensure_ascii=False)}")
    for error in story["errors"]:
        click.echo(f"{'error:':<13} {error}")
    click.echo("")
    click.echo(story["content"] if story["content"] is not None
               else "(content not copied: file over the size limit)")


@main.command()
@settings_options
@json_option
def doctor(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           as_json: bool) -> None:
    """Check database vs pipeline state vs folders; exit 1 if anything is wrong.

    Reports conflicts (one id in two stages), parse errors, drift between the
    folders and the database, and rows that disagree with the pipeline state.

    Example: pipelined doctor --json
    """
    from pipelined.doctor import diagnose

    config = _config(root, db, stages, config_file)
    root_path = config.root if config.root.is_dir() else None
    report = diagnose(_read_conn(config), root_path, config.stages)
    if as_json:
        _print_json(report)
    else:
        for c in report["conflicts"]:
            click.echo(f"conflict     {c['id']}: following {c['winner']}, "
                       f"also in {', '.join(c['others'])}")
        for e in report["parse_errors"]:
            click.echo(f"parse error  {e['path'] or e['id']}: {'; '.join(e['errors'])}")
        for d in report["drift"]:
            click.echo(f"drift        {d['path']}: {d['problem']}")
        for m in report["state_mismatch"]:
            click.echo(f"state        {m['id']}: {m['problem']}")
        if report["ok"]:
            click.echo(f"ok: {report['stories']} stories, no problem found")
    if not report["ok"]:
        sys.exit(1)


@main.command(name="log")
@settings_options
@click.argument("story_id", required=False)
@click.option("--since", default=None,
              help="Only changes at or after this date or RFC 3339 time (UTC if no offset).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the newest N changes (still printed oldest first).")
@json_option
def log_command(root: Path | None, db: Path | None, stages: str | None,
                config_file: Path | None, story_id: str | None, since: str | None,
                limit: int | None, as_json: bool) -> None:
    """Show the history: creations, moves, field changes, deletions; newest last.

    ID may be just its number (deleted stories included).

    Example: pipelined log 12 --since 2026-11-01 --json
    """
    from pipelined import history

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
    history.require_history(conn, config.db_path)
    try:
        since_at = None if since is None else history.normalize_since(since)
    except ValueError:
        raise click.BadParameter(f"{since!r} is no date or RFC 3339 time",
                                 param_hint="--since") from None
    ids = history.resolve_ids(conn, story_id) if story_id else None
    entries = history.history(conn, ids, since_at, limit)
    if as_json:
        _print_json(entries)
        return
    for entry in entries:
        click.echo(history.entry_line(entry))


@main.command()
@settings_options
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new changes as they are committed (until SIGINT/SIGTERM).")
@click.option("--since", "since_seq", type=click.IntRange(min=0), default=None,
              help="Start after this sequence number (0: from the start; default: from now).")
@json_option
def events(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           follow: bool, since_seq: int | None, as_json: bool) -> None:
    """Print committed changes, one line each (JSON lines with --json); resumable.

    Each line carries its sequence number (`seq`): pass the last one seen to
    `--since` to resume. Works on the database alone, read-only.

    Example: pipelined events --follow --json --since 0
    """
    from pipelined import history

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
    history.require_history(conn, config.db_path)
    last = history.max_seq(conn) if since_seq is None else since_seq
    click.echo(f"events after seq {last}", err=True)  # scripts may wait for this line
    stop = _stop_on_signals() if follow else None
    wait = _stdout_waiter()
    try:
        while True:
            for entry in history.rows_after(conn, last):
                line = json.dumps(entry, ensure_ascii=False) if as_json else \
                    history.entry_line(entry)
                sys.stdout.write(line + "\n")
                last = entry["seq"]
            sys.stdout.flush()
            if stop is None or stop() or not wait(0.05) or stop():
                return
    except BrokenPipeError:  # the reader went away: a clean end
        _silence_stdout()


def _stop_on_signals() -> Callable[[], bool]:
    """SIGINT/SIGTERM set a flag the caller polls (exit 0 at the next turn)."""
    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    return lambda: bool(stopped)


def _stdout_waiter() -> Callable[[float], bool]:
    """Sleep up to `seconds`; False once stdout is a pipe whose reader has gone."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # only POLLERR / POLLHUP are reported
    except (AttributeError, OSError, ValueError):  # no real file descriptor
        def sleep(seconds: float) -> bool:
            time.sleep(seconds)
            return True

        return sleep
    return lambda seconds: not poller.poll(int(seconds * 1000))


def _silence_stdout() -> None:
    """No 'Exception ignored' noise when Python flushes a closed pipe at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@main.command()
@settings_options
@json_option
def stats(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
          as_json: bool) -> None:
    """Counts per stage, time spent in each stage, stories finished per ISO week.

    Time in a stage is from the history: from entering it (created or moved in)
    to leaving it (moved out or deleted); median and 90th percentile. A story
    is finished when it moves into the last watched stage.

    Example: pipelined stats --stages 1_backlog,2_current,4_merge --json
    """
    from pipelined import history

    config = _config(root, db, stages, config_file)
    conn = _read_conn(config)
    history.require_history(conn, config.db_path)
    result = history.stats(conn, config.stages)
    if as_json:
        _print_json(result)
        return
    click.echo(_table([[stage, str(count)] for stage, count in result["stages"].items()],
                      ["STAGE", "STORIES"]))
    click.echo("")
    rows = [[stage, str(t["count"]), _duration(t["median_s"]), _duration(t["p90_s"])]
            for stage, t in result["time_in_stage"].items()]
    click.echo(_table(rows, ["STAGE", "STAYS", "MEDIAN", "P90"]))
    click.echo("")
    weeks = [[week, str(n)] for week, n in result["finished_per_week"].items()]
    click.echo(_table(weeks, ["WEEK", f"FINISHED ({result['finish_stage']})"]))


def _duration(seconds: float | None) -> str:
    """3.2s, 4m, 2.5h, 3.1d."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


@main.command()
@settings_options
@json_option
def rebuild(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
            as_json: bool) -> None:
    """Build a fresh database from the folders (the daemon must be stopped).

    The old database is kept beside the new one as `<db>.old-<time>`; story
    numbers already handed out stay used. Use it when the database is corrupt.

    Example: pipelined rebuild --root ~/work/stories
    """
    from dataclasses import asdict

    from pipelined.logs import configure_logging
    from pipelined.maintenance import rebuild as run_rebuild

    config = _config(root, db, stages, config_file)
    configure_logging("auto", "warning")  # one line per story would drown the summary
    result = run_rebuild(config)
    if as_json:
        _print_json(asdict(result))
        return
    kept = f"; the old one is kept as {result.old_db}" if result.old_db else ""
    click.echo(f"rebuilt {result.db}: {result.stories} stories, {result.errors} with errors, "
               f"high-water mark {result.high_water}{kept}")


@main.command()
@settings_options
@click.argument("target", type=click.Path(path_type=Path))
@json_option
def backup(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           target: Path, as_json: bool) -> None:
    """Copy the database to TARGET, consistently, even while the daemon runs.

    To restore: stop the daemon and start it with `--db TARGET` (or copy TARGET
    over the database file).

    Example: pipelined backup /var/backups/pipeline-$(date +%F).db
    """
    from dataclasses import asdict

    from pipelined.maintenance import backup as run_backup

    config = _config(root, db, stages, config_file)
    result = run_backup(config.db_path, target)
    if as_json:
        _print_json(asdict(result))
        return
    click.echo(f"backed up {result.source} to {result.target} ({result.bytes} bytes)")


@main.command()
@settings_options
@click.argument("query")
@click.option("--stage", default=None, help="Only stories in this stage.")
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
    from pipelined.search import search as run_search

    config = _config(root, db, stages, config_file)
    hits = run_search(_read_conn(config), query, stage=stage, limit=limit)
    if as_json:
        _print_json([hit.as_dict() for hit in hits])
        return
    for hit in hits:
        click.echo(f"{hit.id}  {hit.stage}  {hit.name or ''}".rstrip())
        click.echo(f"    {hit.snippet}")
    if not hits:
        click.echo("no match", err=True)


def _parse_depends(value: str | None) -> list[int | str] | None:
    """`12,15` or `12,15_story_x` -> [12, 15] / [12, '15_story_x']."""
    if not value:
        return None
    deps: list[int | str] = []
    for part in (p.strip() for p in value.split(",")):
        if part.isdigit():
            deps.append(int(part))
        elif part and part[0].isdigit() and "_" in part and "/" not in part:
            deps.append(part)
        elif part:
            raise click.BadParameter(f"{part!r} is no story number or id", param_hint="--depends")
    return deps or None


@main.command()
@settings_options
@click.argument("title")
@click.option("--type", "story_type", type=click.Choice(STORY_TYPES), default="story",
              show_default=True, help="The kind of story; part of the file name.")
@click.option("--stage", default=None, help="Stage folder (default: the first stage).")
@click.option("--agent", default=None, help="Agent assigned to it.")
@click.option("--depends", default=None, help="Comma-separated story numbers or ids it needs.")
@click.option("--blocked", is_flag=True, help="Mark it blocked.")
@json_option
def new(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
        title: str, story_type: str, stage: str | None, agent: str | None,
        depends: str | None, blocked: bool, as_json: bool) -> None:
    """Create a story file with a fresh number and front matter; print its id.

    The file is `<stage>/<number>_<type>_<slug>.md`, written atomically; the
    number is one past the highest ever seen (database and folders).

    Example: pipelined new "Export as CSV" --type story --agent coder-1 --depends 12,15
    """
    from pipelined.authoring import create_story

    config = _config(root, db, stages, config_file)
    deps = _parse_depends(depends)
    high_water = 0
    if config.db_path.is_file():  # no database yet: the folders alone know the numbers
        from pipelined.store import queries

        high_water = queries.high_water(_read_conn(config))
    made = create_story(config.root, config.stages, stage or config.stages[0], title,
                        story_type, agent=agent, blocked=blocked, depends_on=deps,
                        high_water=high_water)
    if as_json:
        _print_json({"id": made.story_id, "path": str(made.path.absolute()),
                     "number": made.number, "stage": made.stage})
        return
    click.echo(made.story_id)


@main.command()
@settings_options
@click.argument("story_id")
@click.argument("stage")
@click.option("--no-wait", is_flag=True,
              help="Do not wait for a running daemon to show the move in the database.")
@json_option
def move(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str, stage: str, no_wait: bool, as_json: bool) -> None:
    """Move a story into another stage folder. ID may be just its number.

    With a daemon running, waits (up to 10 s) until the database shows the move.

    Example: pipelined move 12 2_current
    """
    from pipelined.authoring import move_story, wait_for_stage
    from pipelined.errors import SyncTimeout
    from pipelined.store.lock import holder

    config = _config(root, db, stages, config_file)
    moved = move_story(config.root, config.stages, story_id, stage)
    synced: bool | None = None
    if not no_wait and holder(config.db_path) is not None:
        synced = wait_for_stage(config.db_path, moved.story_id, stage, MOVE_WAIT_S)
        if not synced:
            raise SyncTimeout(f"moved {moved.story_id} to {stage}", MOVE_WAIT_S)
    if as_json:
        _print_json({"id": moved.story_id, "from_stage": moved.from_stage,
                     "to_stage": moved.to_stage, "path": str(moved.path.absolute()),
                     "synced": synced})
        return
    if moved.from_stage == moved.to_stage:
        click.echo(f"{moved.story_id} is already in {stage}")
    else:
        click.echo(f"moved {moved.story_id}: {moved.from_stage} -> {moved.to_stage}")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option("--stages", default=None,
              help="Comma-separated stage folders to create (default 1_backlog,2_current,4_merge).")
@click.option("--example", is_flag=True, help="Also copy the example stories (stages-example/).")
@json_option
def init(directory: Path, stages: str | None, example: bool, as_json: bool) -> None:
    """Create the stage folders and a commented pipelined.toml in DIRECTORY.

    Existing folders and files are kept. The config sets `root`, so it works
    from anywhere with `--config DIRECTORY/pipelined.toml`.

    Example: pipelined init ~/work/stories --example
    """
    from dataclasses import asdict

    from pipelined.scaffold import init_root

    config = _config(directory, None, stages, None)  # validates --stages like everywhere
    result = init_root(directory, config.stages, example=example)
    if as_json:
        _print_json(asdict(result))
        return
    for rel in result.created:
        click.echo(f"created {rel}")
    for rel in result.kept:
        click.echo(f"kept    {rel}")
    click.echo(f"start the daemon: pipelined run --config {result.config}")


@main.command()
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

    config = _config(root, db, stages, config_file)
    columns = board_columns(queries.list_stories(_read_conn(config)), config.stages)
    if as_json:
        _print_json({"columns": columns})
        return
    from rich.console import Console

    from pipelined.board import render_board

    render_board(columns, Console())
