"""The `pipelined` command: the console script and `python -m pipelined` start here.

`ls`, `show` and `status` on a simple command line run without click
(`commands.quick`); everything else goes to the click group.

The cyclic garbage collector is off while a command starts: startup imports
and builds thousands of long-lived objects and frees almost none, so each
collection would only walk them again (a measurable part of a restart; see
docs/benchmarks.md). Commands that run for long turn it back on: the daemon once its
state is loaded (`Daemon.run`), `events --follow` before it starts following.
The others end first.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["main"]


def main() -> None:
    gc.disable()
    from pipelined.commands.quick import try_quick

    status = try_quick(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    from pipelined.cli import main as command_group

    command_group()
