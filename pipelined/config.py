"""Settings as a typed record: `Config`, with `Path`s, for the daemon and the commands.

Where each setting comes from (flags, `PIPELINED_*` environment variables, the
TOML config file, the defaults) and how the root is found is `settings`, which
works on plain strings so that the read commands' quick path can do without
this module; `resolve()` here is `settings.resolve()` made a `Config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from pipelined import settings
from pipelined.settings import (
    DEFAULT_STAGES,
    DEFAULTS,
    LOG_FORMATS,
    LOG_LEVELS,
    PATH_SETTINGS,
    resolve_stage,
)

__all__ = [
    "DEFAULT_STAGES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Config",
    "default_db_path",
    "parse",
    "resolve",
    "resolve_stage",
]


# A NamedTuple, not a dataclass: every command imports this module, and dataclasses
# (with the inspect module it loads) would be a quarter of a `pipelined show`. The
# defaults and what each setting means are settings.DEFAULTS.
class Config(NamedTuple):
    """Every setting of the daemon and the commands (immutable:
    `config._replace(name=value)` makes a changed copy)."""

    root: Path = Path()
    db: Path | None = None
    stages: tuple[str, ...] = DEFAULT_STAGES
    settle_ms: int = DEFAULTS["settle_ms"]  # type: ignore[assignment]
    settle_quick_ms: int = DEFAULTS["settle_quick_ms"]  # type: ignore[assignment]
    settle_cap_ms: int = DEFAULTS["settle_cap_ms"]  # type: ignore[assignment]
    delete_grace_ms: int = DEFAULTS["delete_grace_ms"]  # type: ignore[assignment]
    git_lock_cap_s: float = DEFAULTS["git_lock_cap_s"]  # type: ignore[assignment]
    max_file_bytes: int = DEFAULTS["max_file_bytes"]  # type: ignore[assignment]
    rescan_interval_s: float = DEFAULTS["rescan_interval_s"]  # type: ignore[assignment]
    writer_queue: int = DEFAULTS["writer_queue"]  # type: ignore[assignment]
    compact_updates: int = DEFAULTS["compact_updates"]  # type: ignore[assignment]
    log_format: str = DEFAULTS["log_format"]  # type: ignore[assignment]
    log_level: str = DEFAULTS["log_level"]  # type: ignore[assignment]
    publish_server: str | None = None
    publish_token_file: Path | None = None

    def validate(self) -> Config:
        """Return self, or raise ConfigError naming the first bad field."""
        settings.validate(self._asdict())
        return self

    @property
    def db_path(self) -> Path:
        """The database file: the configured one, or one named after the root."""
        return self.db if self.db is not None else default_db_path(self.root)


def default_db_path(root: Path, env: Mapping[str, str] | None = None) -> Path:
    """`<state dir>/<root name>-<hash of the absolute root>.db`: two roots never share."""
    return Path(settings.default_db_path(root, env))


def _with_paths(values: dict[str, object]) -> dict[str, object]:
    return {name: Path(os.fspath(value)) if name in PATH_SETTINGS and value is not None  # type: ignore[call-overload]
            else value for name, value in values.items()}


def parse(text: str, source: str = "config") -> dict[str, object]:
    """Parse TOML config text into typed settings (paths as Paths); unknown keys are
    errors."""
    return _with_paths(settings.parse(text, source))


def resolve(
    flags: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    cwd: Path | None = None,
) -> Config:
    """`settings.resolve` (flags over environment over config file over defaults,
    validated) as a Config."""
    return Config(**_with_paths(settings.resolve(flags, env, config_file, cwd)))  # type: ignore[arg-type]
