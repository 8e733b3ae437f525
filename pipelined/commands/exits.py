"""How a command ends: every user-caused error as one line and an exit code.

Shared by the click group (`pipelined.cli.PipelinedGroup`) and the read commands'
quick path (`commands.quick`), so a command fails the same way whichever ran
it. Every `PipelinedError` becomes one `Error: ...` line and its exit code
here and nowhere else. That line is written even if stderr has gone, and the
exit code stays the error's. No click.

A closed pipe is a clean end (exit 0) only on stdout, and only for the
commands that print there (`pipelined ls | head`). The daemon prints nothing
on stdout, and a broken pipe that ends it is a failure: systemd's
`Restart=on-failure` must bring it back.
"""

from __future__ import annotations

import contextlib
import sys

from pipelined.commands.output import take_note
from pipelined.errors import EXIT_NEEDS_A_PERSON, PipelinedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["DAEMON_COMMANDS", "SERVICE_COMMANDS", "error_line", "run_reported", "say_note"]

# Commands that run until stopped and log to stderr: for them a broken pipe is fatal.
DAEMON_COMMANDS = frozenset({"run"})
# What systemd runs: their errors that a restart cannot fix exit EXIT_NEEDS_A_PERSON.
SERVICE_COMMANDS = frozenset({"run", "serve", "publish"})


def run_reported(name: Callable[[], str | None], call: Callable[[], T]) -> T:
    """`call()`; its note after it (`say_note`), its errors as one line and an exit code
    (raises SystemExit). `name()` is the command's name, asked once the call has
    ended (click learns it while invoking)."""
    take_note()  # nothing left over from an earlier command run in this process
    try:
        result = call()
    except SystemExit:  # a command's own exit (doctor: 1)
        say_note()
        raise
    except PipelinedError as exc:
        from pipelined.terminal import one_line  # the message may quote a file name

        error_line(one_line(f"Error: {exc}"))
        if name() in SERVICE_COMMANDS and not exc.restart_helps:
            sys.exit(EXIT_NEEDS_A_PERSON)  # systemd: do not restart (see errors.py)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        if name() not in DAEMON_COMMANDS and _reader_gone(sys.stdout):
            from pipelined.terminal import discard_output

            discard_output(sys.stdout)  # `pipelined ls | head`: the reader has read enough
            sys.exit(0)
        error_line("Error: an output stream was closed (broken pipe)")
        sys.exit(1)
    except Exception as exc:
        if type(exc).__module__ != "apsw" or name() in DAEMON_COMMANDS:
            raise
        # SQLite failing under a read command (its -wal deleted under a running
        # daemon, an I/O error): one line, not a traceback.
        from pipelined.terminal import one_line

        error_line(one_line(f"Error: the database cannot be read now "
                            f"({type(exc).__name__}: {exc}); see `pipelined status`"))
        sys.exit(1)
    say_note()
    return result


def say_note() -> None:
    """The read command's note that its data may be old (`output.leave_note`), after its
    output; never beside an `Error:` line."""
    note = take_note()
    if note:
        with contextlib.suppress(OSError):  # stderr gone: the output stands
            sys.stderr.write(note + "\n")
            sys.stderr.flush()


def error_line(line: str) -> None:
    """`line` on stderr (at priority error when that is the journal); if stderr has
    gone, the caller's exit code must still be the one."""
    from pipelined.logs import journal_prefix

    try:
        sys.stderr.write(journal_prefix(3) + line + "\n")
        sys.stderr.flush()
    except OSError:
        from pipelined.terminal import discard_output

        discard_output(sys.stderr)


def _reader_gone(stream: Any) -> bool:
    """True when `stream` is a pipe or socket whose reading end has been closed."""
    import select

    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no real file descriptor
        return False
    return any(flags & (select.POLLERR | select.POLLHUP) for _fd, flags in events)
