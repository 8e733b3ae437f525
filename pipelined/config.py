"""Settings and where they come from.

Precedence, highest first: command-line flags, `PIPELINED_*` environment
variables, the TOML config file, the defaults below. `parse(text)` is pure;
`resolve()` gathers the layers; `Config.validate()` names the bad field.

Without a root from any layer, the root is found as git finds `.git`: the
current folder or the nearest one above it that holds a `pipelined.toml` (whose
settings then apply, under an explicit `--config` or `$PIPELINED_CONFIG`'s and
over the user's own config file) or every stage folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pipelined.errors import ConfigError, RootError, UnknownStage

__all__ = [
    "DEFAULT_STAGES",
    "Config",
    "default_config_path",
    "default_db_path",
    "find_root",
    "parse",
    "resolve",
    "resolve_stage",
]

DEFAULT_STAGES = ("1_backlog", "2_current", "4_merge")
PROJECT_FILE = "pipelined.toml"  # `pipelined init` writes it at the root
STAGE_NAME = re.compile(r"^[0-9]{1,18}_[A-Za-z0-9][A-Za-z0-9_-]*$")  # a number SQLite holds
LOG_FORMATS = ("auto", "console", "json", "logfmt")
LOG_LEVELS = ("debug", "info", "warning", "error")


# A NamedTuple, not a dataclass: every command imports this module, and dataclasses
# (with the inspect module it loads) would be a quarter of a `pipelined show`.
class Config(NamedTuple):
    """Every setting of the daemon and the commands, with its default (immutable:
    `config._replace(name=value)` makes a changed copy)."""

    root: Path = Path()  # the current folder
    db: Path | None = None  # None: derived from root, see default_db_path()
    stages: tuple[str, ...] = DEFAULT_STAGES
    settle_ms: int = 100  # quiet time across the whole tree before a flush
    settle_quick_ms: int = 10  # the quiet a lone, whole change waits instead (watch.Coalescer)
    settle_cap_ms: int = 3000  # a burst that never goes quiet is flushed after this
    delete_grace_ms: int = 300  # a vanished story must stay absent this long
    git_lock_cap_s: float = 10.0  # wait at most this long for .git/index.lock to go
    max_file_bytes: int = 1024 * 1024
    rescan_interval_s: float = 300.0  # safety-net stat pass
    writer_queue: int = 64  # batches waiting for the writer before back-pressure
    compact_updates: int = 1000  # persisted pycrdt updates squashed into one snapshot; 0: never
    log_format: str = "auto"
    log_level: str = "info"
    # `pipelined publish`: the y-websocket room (ws://HOST:PORT/ROOM) and a bearer token
    publish_server: str | None = None
    publish_token_file: Path | None = None

    def validate(self) -> Config:
        """Return self, or raise ConfigError naming the first bad field."""
        if not self.stages:
            raise ConfigError("stages", list(self.stages), "at least one stage is needed")
        for stage in self.stages:
            if not STAGE_NAME.match(stage):
                raise ConfigError("stages", stage,
                                  "a stage is named <digits>_<name>, at most 18 digits")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError("stages", list(self.stages), "a stage is listed twice")
        self._check_ranges()
        if self.delete_grace_ms < 0:
            raise ConfigError("delete_grace_ms", self.delete_grace_ms, "must not be negative")
        if self.settle_cap_ms < self.settle_ms:
            raise ConfigError("settle_cap_ms", self.settle_cap_ms, "must be >= settle_ms")
        if self.rescan_interval_s <= 0:
            raise ConfigError("rescan_interval_s", self.rescan_interval_s, "must be positive")
        if self.git_lock_cap_s < 0:
            raise ConfigError("git_lock_cap_s", self.git_lock_cap_s, "must not be negative")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError("log_format", self.log_format, f"one of {', '.join(LOG_FORMATS)}")
        if self.publish_server is not None and not self.publish_server.startswith(
                ("ws://", "wss://")):
            raise ConfigError("publish_server", self.publish_server,
                              "expected ws://HOST:PORT/ROOM or wss://...")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError("log_level", self.log_level, f"one of {', '.join(LOG_LEVELS)}")
        return self

    def _check_ranges(self) -> None:
        for name, least, most in (("settle_ms", 1, 60_000), ("settle_quick_ms", 1, 60_000),
                                  ("settle_cap_ms", 1, 600_000),
                                  ("delete_grace_ms", 0, 600_000),
                                  ("max_file_bytes", 1, 1 << 30), ("writer_queue", 1, 100_000),
                                  ("compact_updates", 0, 10_000_000)):
            value = getattr(self, name)
            if not least <= value <= most:
                raise ConfigError(name, value, f"must be from {least} to {most}")

    @property
    def db_path(self) -> Path:
        """The database file: the configured one, or one named after the root."""
        return self.db if self.db is not None else default_db_path(self.root)


def _state_dir(env: Mapping[str, str]) -> Path:
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several, colon-separated; the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pipelined"


def _sha256(data: bytes) -> Any:
    """SHA-256 from CPython's own module when there is one: hashlib loads OpenSSL,
    about 5 ms of every command's start that names no --db."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - Python 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # noqa: PLC0415 - 3.12+
        except ImportError:
            from hashlib import sha256  # noqa: PLC0415
    return sha256(data)


def default_db_path(root: Path, env: Mapping[str, str] | None = None) -> Path:
    """`<state dir>/<root name>-<hash of the absolute root>.db`: two roots never share."""
    absolute = root.resolve()
    digest = _sha256(str(absolute).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", absolute.name) or "root"
    return _state_dir(os.environ if env is None else env) / f"{name}-{digest}.db"


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/pipelined/config.toml` (or `~/.config/...`)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pipelined" / "config.toml"


def _path(value: object) -> Path:
    return Path(str(value)).expanduser()


def _optional_path(value: object) -> Path | None:
    return _path(value) if value not in (None, "") else None


def _stages(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise ValueError("a list of folder names")


def _whole(value: object) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("a whole number")
    try:
        return int(value.strip() if isinstance(value, str) else value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        raise ValueError("a whole number") from None


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("a number of seconds")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError("a number of seconds") from None


def _word(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value.lower()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


_CONVERT: dict[str, Any] = {
    "root": _path, "db": _optional_path, "stages": _stages,
    "publish_server": _text, "publish_token_file": _optional_path,
    **dict.fromkeys(("settle_ms", "settle_quick_ms", "settle_cap_ms", "delete_grace_ms",
                     "max_file_bytes",
                     "writer_queue", "compact_updates"), _whole),
    **dict.fromkeys(("rescan_interval_s", "git_lock_cap_s"), _seconds),
    **dict.fromkeys(("log_format", "log_level"), _word),
}


def _coerce(name: str, value: object) -> object:
    """Turn a TOML or environment value into the field's type, or raise ConfigError
    naming the setting, the value and what it should be."""
    convert = _CONVERT.get(name)
    if convert is None:
        raise ConfigError(name, value, "unknown setting")
    try:
        return convert(value)
    except ValueError as exc:
        raise ConfigError(name, value, f"expected {exc}") from None


def parse(text: str, source: str = "config") -> dict[str, object]:
    """Parse TOML config text into typed settings; unknown keys are errors."""
    import tomllib  # noqa: PLC0415 - only when there is a config file

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML ({exc})") from None
    return {key: _coerce(key, value) for key, value in raw.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    settings: dict[str, object] = {}
    for name in Config._fields:
        value = env.get(f"PIPELINED_{name.upper()}")
        if value is not None and value != "":
            settings[name] = _coerce(name, value)
    return settings


def resolve_stage(name: str, stages: Sequence[str]) -> str:
    """A stage folder from its name or its alias, the name after the number (`current`
    for `2_current`), in any case; UnknownStage, the one error every command gives."""
    if name in stages:
        return name
    wanted = name.strip().casefold()
    for stage in stages:
        alias = stage.split("_", 1)[1] if re.match(r"[0-9]+_", stage) else stage
        if wanted in (stage.casefold(), alias.casefold()):
            return stage
    raise UnknownStage(name, stages)


def find_root(start: Path, stages: tuple[str, ...]) -> tuple[Path, Path | None] | None:
    """The nearest folder from `start` upward holding a `pipelined.toml` or every stage
    folder: (that folder, its pipelined.toml or None); None when there is none."""
    for folder in (start, *start.parents):
        project = folder / PROJECT_FILE
        if project.is_file():
            return folder, project
        if all((folder / stage).is_dir() for stage in stages):
            return folder, None
    return None


def _read(path: Path) -> dict[str, object]:
    """A config file's settings; a relative `root` or `db` is relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", str(path), f"cannot read it ({exc})") from None
    return {key: path.parent.absolute() / value if isinstance(value, Path) else value
            for key, value in parse(text, source=str(path)).items()}


def resolve(
    flags: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    cwd: Path | None = None,
) -> Config:
    """Layer flags over environment over config file over defaults, then validate.

    `config_file` is an explicit path (it must exist; then it is the only file
    read); without one, `$PIPELINED_CONFIG`, else the user's default file when it
    exists, under the root's own `pipelined.toml`. Without a root in any layer, it
    is looked for from `cwd` upward (see the module doc): finding none is a
    RootError, unless a database is named (a read needs no root).
    """
    env = os.environ if env is None else env
    path = config_file
    explicit = path is not None
    if path is None and env.get("PIPELINED_CONFIG"):
        path, explicit = Path(env["PIPELINED_CONFIG"]), True
    if path is None:
        path = default_config_path(env)
    settings: dict[str, object] = {}
    if explicit or path.is_file():
        settings.update(_read(path))
    override = _from_env(env)
    override.update({k: _coerce(k, v) for k, v in flags.items() if v is not None})
    start = (cwd or Path.cwd()).absolute()
    stages = override.get("stages") or settings.get("stages") or DEFAULT_STAGES
    root = override.get("root") or settings.get("root")
    project: Path | None = None
    if root is None:
        found = find_root(start, stages)  # type: ignore[arg-type]
        if found is None and settings.get("db") is None and override.get("db") is None:
            raise RootError(start, "no stories here: neither this folder nor one above it "
                            f"holds a {PROJECT_FILE} or the stage folders "
                            f"{', '.join(s + '/' for s in stages)} (give --root, or make "  # type: ignore[attr-defined]
                            "one with `pipelined init`)")
        root, project = found if found is not None else (start, None)
    elif (Path(str(root)) / PROJECT_FILE).is_file():
        project = Path(str(root)) / PROJECT_FILE
    if project is not None and not explicit:
        # The root's own settings; the folder holding the file is the root, whatever
        # its `root` says (a copied or cloned project must not point at the original).
        settings.update({k: v for k, v in _read(project).items() if k != "root"})
    settings.update(override)
    settings["root"] = root
    return Config()._replace(**settings).validate()  # type: ignore[arg-type]
