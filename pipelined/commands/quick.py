"""The quick path: `ls`, `show`, `status` and `run` on a simple command line, without click.

Importing click and building the command group is most of what a read command
costs before it opens the database, and a good part of the daemon's way to
READY; these are the commands typed, scripted and restarted most. `try_quick`
recognises their plain forms and runs the very functions the click commands
call (`commands.readout`, `commands.rundaemon`), through the same ending
(`commands.exits`): the output, the note about old data, the `Error:` line
and the exit code are the same. Anything else on the command line (help,
another option, a repeated or empty one, a value click would refuse, shell
completion) returns None, and click parses it as before.
`tests/test_quick_path.py` runs each form both ways.

Recognised, in any order after the command name:

    ls     [--stage S] [--json]
    show   ID [--json]
    status [--json]
    run    [--settle-ms N] [--max-file-bytes N] [--log-format F] [--log-level L]

each also with the settings options `--root`, `--db`, `--stages`, `--config`,
as `--opt VALUE` or `--opt=VALUE`.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["parse", "try_quick"]

_SETTINGS = ("--root", "--db", "--stages", "--config")
# command -> its own options that take a value
_VALUED = {"ls": ("--stage",), "show": (), "status": (),
           "run": ("--settle-ms", "--max-file-bytes", "--log-format", "--log-level")}
_FLAGS = {"ls": ("--json",), "show": ("--json",), "status": ("--json",), "run": ()}


def _valid(name: str, value: str) -> bool:
    """Whether click would take `value` for option `name` as it is (else click parses
    the line, and says what is wrong)."""
    from pipelined.settings import LOG_FORMATS, LOG_LEVELS

    if name in ("--settle-ms", "--max-file-bytes"):  # int() takes at most 4,300 digits
        return value.isascii() and value.isdigit() and len(value) <= 18
    if name == "--log-format":
        return value in LOG_FORMATS
    if name == "--log-level":
        return value in LOG_LEVELS
    return True


def parse(args: Sequence[str]) -> tuple[str, dict[str, str], str | None, bool] | None:
    """(command, options by name, the one argument, --json) for a command line the
    quick path runs, or None for click to parse."""
    if not args or args[0] not in _VALUED:
        return None
    command, valued = args[0], (*_SETTINGS, *_VALUED[args[0]])
    options: dict[str, str] = {}
    argument: str | None = None
    as_json = False
    rest = iter(args[1:])
    for token in rest:
        if token in _FLAGS[command] and not as_json:
            as_json = True
        elif token.startswith("--"):
            name, has_value, value = token.partition("=")
            if not has_value:
                value = next(rest, "")
            if (name not in valued or name in options or not value or value.startswith("-")
                    or not _valid(name, value)):
                return None
            options[name] = value
        elif command == "show" and argument is None and not token.startswith("-"):
            argument = token
        else:
            return None
    if (command == "show") != (argument is not None):
        return None
    return command, options, argument, as_json


def try_quick(args: Sequence[str]) -> int | None:
    """Run `pipelined ARGS` here if it is a simple `ls`, `show`, `status` or `run`: its exit
    status (or SystemExit from `commands.exits`); None when click must parse it."""
    if os.environ.get("_PIPELINED_COMPLETE"):  # shell completion: click's
        return None
    parsed = parse(args)
    if parsed is None:
        return None
    command, options, argument, as_json = parsed
    from pipelined.commands.exits import run_reported

    def run() -> None:
        if command != "run":
            from pipelined.commands import readout
            from pipelined.settings import locate

            # The settings as `load_config` resolves them, with string paths (settings).
            where = locate({"root": options.get("--root"), "db": options.get("--db"),
                            "stages": options.get("--stages")}, options.get("--config"))
            if command == "ls":
                readout.list_stories(where, stage=options.get("--stage"), as_json=as_json)
            elif command == "show":
                readout.show_story(where, str(argument), as_json)
            else:
                readout.show_status(where, as_json)
        else:
            from pathlib import Path

            from pipelined.commands.rundaemon import run_daemon

            def path(name: str) -> Path | None:
                return Path(options[name]) if name in options else None

            def number(name: str) -> int | None:
                return int(options[name]) if name in options else None

            run_daemon(path("--root"), path("--db"), options.get("--stages"),
                       path("--config"), settle_ms=number("--settle-ms"),
                       max_file_bytes=number("--max-file-bytes"),
                       log_format=options.get("--log-format"),
                       log_level=options.get("--log-level"))

    try:
        run_reported(lambda: command, run)
    except KeyboardInterrupt:  # as click ends one
        sys.stderr.write("\nAborted!\n")
        return 1
    return 0
