"""`status`, `doctor`, `rebuild` and `backup`: look after the daemon and its database."""

from __future__ import annotations

import sys
from pathlib import Path

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
    from pipelined.commands.readout import show_status

    show_status(load_config(root, db, stages, config_file), as_json)


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
    report = diagnose(read_conn(config, announce=True), root_path, config.stages)
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
