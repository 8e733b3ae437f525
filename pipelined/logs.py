"""structlog setup: console on a terminal, JSON (or logfmt) otherwise.

Logs go to stderr. Under journald no timestamp is added (it keeps its own).

structlog (with the asyncio it imports) is an eighth of the daemon's start-up
time, and a restart with nothing changed logs nothing before READY. So modules
take a `get_logger()` proxy, and structlog is imported and configured on the
first log call, which is after READY on that path.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

__all__ = ["configure_logging", "get_logger"]

_settings = {"fmt": "auto", "level": "info"}
_configured = False
_generation = 0  # bumped at every (re)configuration: proxies then fetch a fresh logger
_lock = threading.RLock()


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Choose the renderer and level; applied when the first line is logged."""
    global _configured  # noqa: PLW0603 - one process-wide logging setup
    with _lock:
        _settings.update(fmt=fmt, level=level)
        _configured = False


def _apply() -> None:
    global _configured, _generation  # noqa: PLW0603 - one process-wide logging setup
    with _lock:
        if _configured:
            return
        _generation += 1
        import structlog

        fmt, level = _settings["fmt"], _settings["level"]
        if fmt == "auto":
            fmt = "console" if sys.stderr.isatty() else "json"
        processors: list[Any] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
        ]
        if not os.environ.get("JOURNAL_STREAM"):
            processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        if fmt == "console":
            processors.append(structlog.dev.set_exc_info)
            processors.append(structlog.dev.ConsoleRenderer())
        else:
            processors.append(structlog.processors.format_exc_info)
            if fmt == "logfmt":
                processors.append(structlog.processors.LogfmtRenderer(key_order=["event"]))
            else:
                processors.append(structlog.processors.JSONRenderer())
        structlog.configure(
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(
                getattr(logging, level.upper(), logging.INFO)),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
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
