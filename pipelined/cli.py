"""The `pipelined` command line: the group, and where each command lives.

Each command is a click function in a module of `pipelined.commands`, imported
only when that command is looked up (to run it, complete it, or list it in
`--help`): `pipelined run` loads no read command and `pipelined ls` no daemon.
This module must stay cheap to import (click and the errors, nothing else).
`PipelinedGroup.invoke` runs each command through `commands.exits`, where every
`PipelinedError` becomes one `Error: ...` line and its exit code (and a closed
pipe a clean end, for the commands that print); a bad command line becomes
one line here.

`ls`, `show` and `status` on a simple command line skip click and this module
altogether (`commands.quick`, called from `pipelined.entry`).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import click

from pipelined import __version__
from pipelined.commands.exits import (
    DAEMON_COMMANDS,
    SERVICE_COMMANDS,
    error_line,
    run_reported,
    say_note,
)
from pipelined.errors import EXIT_NEEDS_A_PERSON

__all__ = ["COMMANDS", "DAEMON_COMMANDS", "LazyCommands", "PipelinedGroup", "main"]

# Command name -> "module:function". `--help` lists them sorted by name.
COMMANDS: Mapping[str, str] = {
    "run": "pipelined.commands.run:run",
    "status": "pipelined.commands.admin:status",
    "doctor": "pipelined.commands.admin:doctor",
    "rebuild": "pipelined.commands.admin:rebuild",
    "backup": "pipelined.commands.admin:backup",
    "ls": "pipelined.commands.stories:ls_command",
    "show": "pipelined.commands.stories:show",
    "board": "pipelined.commands.stories:board",
    "search": "pipelined.commands.stories:search",
    "log": "pipelined.commands.changes:log_command",
    "events": "pipelined.commands.changes:events",
    "stats": "pipelined.commands.changes:stats",
    "new": "pipelined.commands.authoring:new",
    "move": "pipelined.commands.authoring:move",
    "init": "pipelined.commands.authoring:init",
    "set": "pipelined.commands.editing:set_command",
    "claim": "pipelined.commands.editing:claim",
    "edit": "pipelined.commands.editing:edit",
    "mcp": "pipelined.commands.mcp:mcp_command",
    "serve": "pipelined.commands.serve:serve",
    "publish": "pipelined.commands.publish:publish",
}


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name; a command's module is imported on its first lookup.

    It stands in for the dict click keeps in `Group.commands`, so click itself
    lists the names, completes them and suggests one for a typo ("Did you mean
    'show'?") from the keys alone, without importing a command module.
    """

    def __init__(self, targets: Mapping[str, str]) -> None:
        self._targets = dict(targets)  # name -> "module:function", not imported yet
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            module_name, _, attr = self._targets[name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._targets[name]} is not a click command")
            self._loaded[name] = command
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._targets.pop(name, None)
        self._loaded.pop(name, None)

    def __contains__(self, name: object) -> bool:  # without importing, unlike Mapping's
        return name in self._targets or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._targets), **dict.fromkeys(self._loaded)})

    def __len__(self) -> int:
        return len(self._targets.keys() | self._loaded.keys())


class PipelinedGroup(click.Group):
    """Loads each command when it is looked up; turns every user-caused error into
    one line and an exit code."""

    def __init__(self, name: str | None = None, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, commands=LazyCommands(lazy_commands or {}), **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Bare `pipelined`: the help, and success. Not while completing a command name,
        # when click parses the group with no arguments (resilient_parsing).
        if not args and not ctx.resilient_parsing:
            click.echo(ctx.get_help())
            ctx.exit(0)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # `pipelined --bogus`: one line, as below
            if ctx.resilient_parsing:
                raise
            _usage_exit(exc, None)
            raise  # not reached

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return run_reported(lambda: ctx.invoked_subcommand,
                                lambda: super(PipelinedGroup, self).invoke(ctx))
        except click.exceptions.Exit:  # click's own exit (ctx.exit): like SystemExit
            say_note()
            raise
        except click.UsageError as exc:  # a bad flag or value: one line, not a usage block
            _usage_exit(exc, ctx.invoked_subcommand)


def _usage_exit(exc: click.UsageError, subcommand: str | None) -> None:
    """A bad command line: one line and exit 2, or 78 for what systemd starts (a bad
    flag in a unit's ExecStart= is not cured by a restart)."""
    from pipelined.terminal import one_line  # it quotes what was typed

    sub = exc.ctx.info_name if exc.ctx and exc.ctx.parent else None
    command = f"pipelined {sub}" if sub else "pipelined"
    error_line(one_line(f"Error: {_usage_message(exc)} (see `{command} --help`)"))
    sys.exit(EXIT_NEEDS_A_PERSON if subcommand in SERVICE_COMMANDS else exc.exit_code)


# click's words for a value it could not convert, and ours.
_CLICK_WORDS = (("is not a valid integer range", "is not a whole number"),
                ("is not a valid integer", "is not a whole number"),
                ("is not a valid float range", "is not a number"),
                ("is not a valid float", "is not a number"))
_RANGE = re.compile(r"is not in the range (-?\d+)<=x<=(-?\d+)")  # click.IntRange's


def _usage_message(exc: click.UsageError) -> str:
    """click's message for a bad command line, in the tool's voice: the option, the
    value, what would be valid; no capital, no closing full stop."""
    if isinstance(exc, click.BadParameter) and not isinstance(exc, click.MissingParameter):
        hint = exc.param_hint or (exc.param.opts[0] if exc.param and exc.param.opts else None)
        if isinstance(hint, list | tuple):
            hint = " / ".join(hint)
        message = str(exc.message)
        for theirs, ours in _CLICK_WORDS:
            message = message.replace(theirs, ours)
        message = _RANGE.sub(r"is not from \1 to \2", message)
        text = f"bad value for {str(hint).strip(chr(39))}: {message}" if hint else message
    else:
        text = exc.format_message()
        text = text[:1].lower() + text[1:]
    return text.rstrip(".")


@click.group(cls=PipelinedGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="pipelined")
def main() -> None:
    """Keep a folder of markdown stories live in a pycrdt document and SQLite.

    Run `pipelined run` in the folder holding 1_backlog/, 2_current/ and
    4_merge/; query it with `pipelined ls`, `show`, `status` and `doctor`.
    """
