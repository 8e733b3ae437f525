"""`log`, `events` and `stats`: what changed, from the history table, read-only."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from pipelined.commands.common import (
    complete_story_id,
    int_from,
    json_option,
    load_config,
    print_json,
    read_conn,
    settings_options,
    shown_time,
    table,
)
from pipelined.terminal import discard_output, json_text, one_line

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["events", "log_command", "stats"]


@click.command(name="log")
@settings_options
@click.argument("story_id", required=False, shell_complete=complete_story_id)
@click.option("--since", default=None,
              help="Only changes at or after this date or RFC 3339 time (UTC if no offset).")
@click.option("--limit", type=int_from(1), default=None,
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
    from pipelined.store import history as store_history

    try:  # the command line first: a bad value is the error, whatever the database
        since_at = None if since is None else history.normalize_since(since)
    except ValueError:
        raise click.BadParameter(f"{since!r} is not a date or time; expected a date such as "
                                 "2026-11-29 or an RFC 3339 time such as 2026-11-29T09:30:00Z",
                                 param_hint="--since") from None
    config = load_config(root, db, stages, config_file)
    conn = read_conn(config, announce=True)
    store_history.require_history(conn, config.db_path)
    ids = store_history.resolve_ids(conn, story_id) if story_id else None
    entries = store_history.history(conn, ids, since_at, limit)
    if as_json:
        print_json(entries)
        return
    if entries:
        rows = [[str(e["seq"]), shown_time(e["at"]), e["id"], history.entry_what(e)]
                for e in entries]
        click.echo(table(rows, ["SEQ", "WHEN", "ID", "WHAT"], shrink=((3, 24), (2, 20))))


@click.command()
@settings_options
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new changes as they are committed (until SIGINT/SIGTERM).")
@click.option("--since", "since_seq", type=int_from(0), default=None,
              help="Start after this sequence number (0: from the start; default: from now).")
@json_option
def events(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
           follow: bool, since_seq: int | None, as_json: bool) -> None:
    """Print committed changes, one line each (JSON lines with --json); resumable.

    Each line carries its sequence number (`seq`): pass the last one seen to
    `--since` to resume. Works on the database alone, read-only.

    Example: pipelined events --follow --json --since 0
    """
    import json

    from pipelined import history
    from pipelined.store import history as store_history

    config = load_config(root, db, stages, config_file)
    conn = read_conn(config, announce=True)
    store_history.require_history(conn, config.db_path)
    last = store_history.max_seq(conn) if since_seq is None else since_seq
    click.echo(f"events after seq {last}", err=True)  # scripts may wait for this line
    stop = _stop_on_signals() if follow else None
    if follow:
        import gc

        gc.enable()  # off while the command started (pipelined.entry); this one runs on
    wait = _stdout_waiter()
    try:
        while True:
            for entry in store_history.rows_after(conn, last):
                line = json_text(json.dumps(entry, ensure_ascii=False)) if as_json else \
                    one_line(history.entry_line(entry))
                sys.stdout.write(line + "\n")
                last = entry["seq"]
            sys.stdout.flush()
            if stop is None or stop() or not wait(0.05) or stop():
                return
    except BrokenPipeError:  # the reader went away: a clean end
        discard_output(sys.stdout)


def _stop_on_signals() -> Callable[[], bool]:
    """SIGINT/SIGTERM set a flag the caller polls (exit 0 at the next turn)."""
    from pipelined.terminal import end_ctrl_c_line

    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and not stopped:
            end_ctrl_c_line()
        stopped.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
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


@click.command()
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
    from pipelined.store import history as store_history

    config = load_config(root, db, stages, config_file)
    conn = read_conn(config, announce=True)
    store_history.require_history(conn, config.db_path)
    result = history.stats(conn, config.stages)
    if as_json:
        print_json(result)
        return
    click.echo(table([[stage, str(count)] for stage, count in result["stages"].items()],
                     ["STAGE", "STORIES"]))
    click.echo("")
    rows = [[stage, str(t["count"]), _duration(t["median_s"]), _duration(t["p90_s"])]
            for stage, t in result["time_in_stage"].items()]
    click.echo(table(rows, ["STAGE", "STAYS", "MEDIAN", "P90"]))
    click.echo("")
    weeks = [[week, str(n)] for week, n in result["finished_per_week"].items()]
    click.echo(table(weeks, ["WEEK", f"FINISHED ({result['finish_stage']})"]))


def _duration(seconds: float | None) -> str:
    """3.2s, 4m, 2.5h, 3.1d."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
