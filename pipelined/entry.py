"""The `pipelined` command: the console script and `python -m pipelined` start here.

The cyclic garbage collector is off while a command starts: startup imports
and builds thousands of long-lived objects and frees almost none, so each
collection would only walk them again (a measurable part of a restart; see
docs/benchmarks.md). Commands that run for long turn it back on: the daemon once its
state is loaded (`Daemon.run`), `events --follow` before it starts following.
The others end first.
"""

from __future__ import annotations

import gc

__all__ = ["main"]


def main() -> None:
    gc.disable()
    from pipelined.cli import main as command_group

    command_group()
