"""`pipelined run`: the daemon in the foreground.

Alone in its module: everything imported before READY delays it, so starting
the daemon loads no other command.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import TYPE_CHECKING

import click

from pipelined.commands.common import load_config, settings_options

if TYPE_CHECKING:
    from pathlib import Path

    from pipelined.config import Config

__all__ = ["run"]


@click.command()
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
        return load_config(root, db, stages, config_file, settle_ms=settle_ms,
                           max_file_bytes=max_file_bytes, log_format=log_format,
                           log_level=log_level)

    config = load()
    from pipelined.daemon import Daemon
    from pipelined.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a daemon that
    # seems stuck, the one question an operator (or a test) needs answered.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(Daemon(config, reload_config=load).run())
