"""The daemon's start, without click: `pipelined run` and the quick path call it."""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import TYPE_CHECKING

from pipelined.commands.readout import load_config

if TYPE_CHECKING:
    from pathlib import Path

    from pipelined.config import Config

__all__ = ["run_daemon"]


def run_daemon(root: Path | None, db: Path | None, stages: str | None,
               config_file: Path | None, **flags: object) -> None:
    """Configure logging and run the daemon until it stops; exits with its status.

    `flags` are `run`'s own options (settle_ms, max_file_bytes, log_format,
    log_level), None when not given.
    """
    def load() -> Config:  # again on SIGHUP: the same flags over a fresh config file
        return load_config(root, db, stages, config_file, **flags)

    config = load()
    from pipelined.daemon import Daemon
    from pipelined.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a daemon that
    # seems stuck, the one question an operator (or a test) needs answered.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(Daemon(config, reload_config=load).run())
