"""`status`, `doctor`, `rebuild` and `backup`: look after the daemon and its database."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from pipelined.commands.common import (
    echo_line,
    json_option,
    load_config,
    print_json,
    read_conn,
    settings_options,
)

__all__ = ["backup", "doctor", "rebuild", "status"]


@click.command()
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

    config = load_config(root, db, stages, config_file)
    conn = read_conn(config)
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
        "folder_problems": beat.get("folder_problems", []) if beat else [],
        "log_lines_dropped": beat.get("log_lines_dropped") if beat else None,
        "stories": sum(counts.values()),
        "stages": counts,
        "last_sync": info.get("last_sync"),
    }
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
    echo_line(f"database:  {config.db_path}")
    echo_line(f"last sync: {result['last_sync'] or 'never'}")
    click.echo(f"stories:   {result['stories']}")
    for stage, count in counts.items():
        echo_line(f"  {stage:<12} {count}")


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


@click.command()
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
    from pipelined.layout import check_root

    config = load_config(root, db, stages, config_file)
    # It compares the folders with the database: without them "ok" would be a lie.
    root_path = check_root(config.root, config.stages)
    report = diagnose(read_conn(config), root_path, config.stages)
    if as_json:
        print_json(report)
    else:
        for c in report["conflicts"]:
            echo_line(f"conflict     {c['id']}: following {c['winner']}, "
                      f"also in {', '.join(c['others'])}")
        for e in report["parse_errors"]:
            messages = "; ".join(f"{err['message']} ({err['code']})" for err in e["errors"])
            echo_line(f"parse error  {e['path'] or e['id']}: {messages}")
        for d in report["drift"]:
            echo_line(f"drift        {d['path']}: {d['problem']}")
        for m in report["state_mismatch"]:
            echo_line(f"state        {m['id']}: {m['problem']}")
        if report["ok"]:
            click.echo(f"ok: {report['stories']} stories, no problem found")
    if not report["ok"]:
        sys.exit(1)


@click.command()
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

    config = load_config(root, db, stages, config_file)
    configure_logging("auto", "warning")  # one line per story would drown the summary
    result = run_rebuild(config)
    if as_json:
        print_json(asdict(result))
        return
    kept = f"; the old one is kept as {result.old_db}" if result.old_db else ""
    click.echo(f"rebuilt {result.db}: {result.stories} stories, {result.errors} with errors, "
               f"high-water mark {result.high_water}{kept}")


@click.command()
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

    config = load_config(root, db, stages, config_file)
    result = run_backup(config.db_path, target)
    if as_json:
        print_json(asdict(result))
        return
    click.echo(f"backed up {result.source} to {result.target} ({result.bytes} bytes)")
