"""structlog setup: console on a terminal, JSON (or logfmt) otherwise.

Logs go to stderr. When stderr is the journal (`$JOURNAL_STREAM` names it), no
timestamp is added (journald keeps its own) and every line starts with its
syslog priority, `<4>` for a warning: journald's `SyslogLevelPrefix=` (on by
default) strips it and files the line at that priority, so
`journalctl -p warning -u pipelined` shows warnings and errors only.

Values come from story files (ids are file names): the console and logfmt
renderers print them as they are, so their string values are escaped first
(`pipelined.terminal.one_line`; JSON escapes by itself). Losing stderr never
stops the daemon: `LineSink` drops a line it cannot write, counts it, and
never raises into the code that logged.

structlog (with the asyncio it imports) is a large part of the daemon's start-up
time, and a restart with nothing changed logs nothing before READY. So modules
take a `get_logger()` proxy, and structlog is imported and configured on the
first log call, which is after READY on that path.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, TextIO

from pipelined.terminal import block, discard_output, one_line

if TYPE_CHECKING:
    from structlog.typing import ExcInfo

__all__ = ["LineSink", "configure_logging", "dropped_lines", "get_logger", "journal_prefix",
           "stderr_is_journal"]

# structlog's method names -> syslog priorities (sd-daemon.h's SD_ERR and friends).
_PRIORITIES = {"debug": 7, "info": 6, "msg": 6, "log": 6, "warn": 4, "warning": 4,
               "err": 3, "error": 3, "exception": 3, "failure": 3, "critical": 2, "fatal": 2}

_settings = {"fmt": "auto", "level": "info"}
_configured = False
_generation = 0  # bumped at every (re)configuration: proxies then fetch a fresh logger
_lock = threading.RLock()
_sink: LineSink | None = None  # kept across reconfigurations while stderr is the same stream


class LineSink:
    """Where rendered log lines go: a text stream whose reader may go away.

    structlog's PrintLogger raises the stream's errors into whatever logged:
    the apply thread, the writer, the main loop. When journald restarts, the
    daemon's stderr socket has no reader any more, and a `BrokenPipeError`
    from a log call would end the sync. Here a line that cannot be written is
    dropped and counted, and nothing is raised.

    A line goes to the stream's file descriptor in one `os.write`, not through
    the stream's buffer: a failed line is then gone, not kept in a buffer that
    fails again at every later write and at exit. A pipe or socket whose
    reader has gone never comes back, so its descriptor is pointed at
    /dev/null (Python's flush at exit, faulthandler and thread tracebacks then
    write into nothing too) and every later line is counted without a write.
    A stream without a descriptor (a test's capture) is written as a stream.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.dropped = 0
        self.lost = False
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._lock = threading.Lock()  # one line at a time, from any thread

    def __repr__(self) -> str:
        return f"LineSink({self.stream!r}, dropped={self.dropped}, lost={self.lost})"

    def msg(self, message: str) -> None:
        line = message + "\n"
        with self._lock:
            if self.lost:
                self.dropped += 1
                return
            try:
                if self._fd is None:
                    self.stream.write(line)
                    self.stream.flush()
                else:
                    data = line.encode(self._encoding, "backslashreplace")
                    while data:  # a pipe or terminal may take a long line in parts
                        data = data[os.write(self._fd, data):]
            except (BrokenPipeError, ConnectionResetError):
                self.lost = True
                self.dropped += 1
                discard_output(self.stream)
            except (OSError, ValueError):  # a full disk, a closed file: this line only
                self.dropped += 1

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def dropped_lines() -> int:
    """Log lines that could not be written to stderr since it was configured."""
    return _sink.dropped if _sink is not None else 0


class _Printable:
    """A log value other than str or a number: printed escaped by str() or repr()."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return one_line(str(self.value))

    def __repr__(self) -> str:
        return one_line(repr(self.value))


def _printable_values(_logger: object, _method: str,
                      event_dict: dict[str, Any]) -> dict[str, Any]:
    """Escape control and bidi characters in the values (for console and logfmt).

    A traceback or stack keeps its newlines; every other string is one line.
    `exc_info` is left to the renderer, whose traceback is escaped too.
    """
    for key, value in event_dict.items():
        if key == "exc_info":
            continue
        if isinstance(value, str):
            event_dict[key] = block(value) if key in ("exception", "stack") else one_line(value)
        elif value is not None and not isinstance(value, bool | int | float):
            event_dict[key] = _Printable(value)
    return event_dict


def _printable_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """The console renderer's traceback, plain, with its text escaped like the values."""
    import structlog

    text = io.StringIO()
    structlog.dev.plain_traceback(text, exc_info)
    sio.write(block(text.getvalue()))


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd connected (`$JOURNAL_STREAM` is
    its device and inode), not merely inherited by a child that redirected it."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    try:
        stat = os.fstat(2)
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


def journal_prefix(priority: int) -> str:
    """`<N>` for a line on stderr when that is the journal, else nothing."""
    return f"<{priority}>" if stderr_is_journal() else ""


def _with_priority(_logger: object, method: str, line: str) -> str:
    """The rendered line behind its syslog priority, for journald (see the module doc)."""
    return f"<{_PRIORITIES.get(method, 6)}>{line}"


def stdlib_handler() -> logging.Handler:
    """A stderr handler for the standard library's loggers (uvicorn's, the MCP SDK's):
    `LEVEL name: message` lines, behind their syslog priority under journald."""
    prefix = stderr_is_journal()

    class _Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            line = one_line(super().format(record))
            if not prefix:
                return line
            return f"<{_PRIORITIES.get(record.levelname.lower(), 6)}>{line}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Choose the renderer and level; applied when the first line is logged."""
    global _configured  # noqa: PLW0603 - one process-wide logging setup
    with _lock:
        _settings.update(fmt=fmt, level=level)
        _configured = False


def _import_structlog() -> Any:
    """structlog, imported without rich.

    structlog.dev imports rich, when it is installed (the MCP SDK brings it), only to
    offer rich tracebacks, and ours are plain (`_printable_traceback`). Loading it
    would cost the daemon about 5 MiB and a third of structlog's import time. So
    while structlog is imported, `import rich` fails as if rich were absent, and
    then works again: the board imports it later as usual. No thread of the
    daemon, `serve` or `mcp` imports rich.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog

        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]  # import rich -> ImportError
    try:
        import structlog
    finally:
        if sys.modules.get("rich", False) is None:
            del sys.modules["rich"]
    return structlog


def _apply() -> None:
    global _configured, _generation, _sink  # noqa: PLW0603 - one process-wide logging setup
    with _lock:
        if _configured:
            return
        _generation += 1
        structlog = _import_structlog()
        fmt, level = _settings["fmt"], _settings["level"]
        if fmt == "auto":
            fmt = "console" if sys.stderr.isatty() else "json"
        processors: list[Any] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
        ]
        journal = stderr_is_journal()
        if not journal:
            processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        if fmt == "console":
            processors.append(structlog.dev.set_exc_info)
            processors.append(_printable_values)
            processors.append(structlog.dev.ConsoleRenderer(
                exception_formatter=_printable_traceback))
        else:
            processors.append(structlog.processors.format_exc_info)
            if fmt == "logfmt":
                processors.append(_printable_values)
                processors.append(structlog.processors.LogfmtRenderer(key_order=["event"]))
            else:  # json.dumps escapes every control and non-ASCII character itself
                processors.append(structlog.processors.JSONRenderer())
        if journal:
            processors.append(_with_priority)
        if _sink is None or _sink.stream is not sys.stderr:
            _sink = LineSink(sys.stderr)
        sink = _sink
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(
                getattr(logging, level.upper(), logging.INFO)),
            logger_factory=lambda *_args: sink,
            cache_logger_on_first_use=True,
        )
        _configured = True


class _LazyLogger:
    """Stands for `structlog.get_logger(name)` until the first call."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None
        self._generation = -1

    def __getattr__(self, method: str) -> Any:
        if not _configured:
            _apply()
        if self._generation != _generation:  # first use, or a reload (SIGHUP) since
            import structlog

            self._logger = structlog.get_logger(self._name)
            self._generation = _generation
        return getattr(self._logger, method)


def get_logger(name: str) -> Any:
    """A structlog logger, imported and configured on first use."""
    return _LazyLogger(name)
