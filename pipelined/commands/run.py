"""`pipelined run`: the daemon in the foreground.

Alone in its module: everything imported before READY delays it, so starting
the daemon loads no other command. The daemon itself starts in `run_daemon`
(`commands.rundaemon`), which the quick path (`commands.quick`) calls without
click for a plain command line, as systemd's ExecStart= is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pipelined.commands.common import settings_options
from pipelined.commands.rundaemon import run_daemon
from pipelined.config import LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["run"]


@click.command()
@settings_options
@click.option("--settle-ms", type=int, default=None,
              help="Quiet time across the tree before a flush (default 100).")
@click.option("--max-file-bytes", type=int, default=None,
              help="Larger story files are tracked but not copied (default 1 MiB).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS),
              default=None, help="Log format (default: console on a terminal, else JSON).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS),
              default=None, help="Log level (default info).")
def run(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
        settle_ms: int | None, max_file_bytes: int | None, log_format: str | None,
        log_level: str | None) -> None:
    """Run the daemon in the foreground (what systemd starts).

    Example: pipelined run --root ~/work/stories
    """
    run_daemon(root, db, stages, config_file, settle_ms=settle_ms,
               max_file_bytes=max_file_bytes, log_format=log_format, log_level=log_level)
