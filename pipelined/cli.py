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
@json_option
def ls_command(root: Path | None, db: Path | None, stages: str | None,
               config_file: Path | None, stage: str | None, agent: str | None,
               blocked: bool | None, as_json: bool) -> None:
    """List stories, by stage then number.

    Example: pipelined ls --stage 2_current --agent coder-1
    """
    from pipelined.store import queries

    config = _config(root, db, stages, config_file)
    items = queries.list_stories(_read_conn(config), stage=stage, agent=agent, blocked=blocked)
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
