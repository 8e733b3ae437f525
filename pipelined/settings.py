"""Settings and where they come from, as plain values: the layers, the root, the database.

Precedence, highest first: command-line flags, `PIPELINED_*` environment
variables, the TOML config file, the defaults below. `parse(text)` is pure;
`resolve()` gathers the layers and validates them (`validate` names the bad
field); `config.Config` is the same settings as a typed record with `Path`s.

Without a root from any layer, the root is found as git finds `.git`: the
current folder or the nearest one above it that holds a `pipelined.toml` (whose
settings then apply, under an explicit `--config` or `$PIPELINED_CONFIG`'s and
over the user's own config file) or every stage folder.

Paths here are strings and `os.path` does the work: the read commands' quick
path (`commands.quick`) resolves its settings with this module alone, and
`pathlib`, `re` and `typing` (each of which imports `re` and `enum`) would cost
it more than everything else it imports (docs/benchmarks.md).
"""

from __future__ import annotations

import os

from pipelined.errors import ConfigError, RootError, UnknownStage
from pipelined.paths import absolute, clean_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Protocol

    class Where(Protocol):
        """What a read needs: the root, the database and the stages (a `config.Config`
        or a `Located`)."""

        @property
        def root(self) -> str | os.PathLike[str]: ...

        @property
        def db_path(self) -> str | os.PathLike[str]: ...

        @property
        def stages(self) -> tuple[str, ...]: ...

__all__ = [
    "DEFAULTS",
    "DEFAULT_STAGES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "PROJECT_FILE",
    "Located",
    "default_config_path",
    "default_db_path",
    "find_root",
    "is_stage_name",
    "locate",
    "parse",
    "resolve",
    "resolve_stage",
    "validate",
]

DEFAULT_STAGES = ("1_backlog", "2_current", "4_merge")
PROJECT_FILE = "pipelined.toml"  # `pipelined init` writes it at the root
LOG_FORMATS = ("auto", "console", "json", "logfmt")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_STAGE_DIGITS = 18  # a stage number SQLite holds

# Every setting with its default, in `config.Config`'s order (its fields are these).
DEFAULTS: dict[str, object] = {
    "root": ".",  # the current folder
    "db": None,  # None: derived from root, see default_db_path()
    "stages": DEFAULT_STAGES,
    "settle_ms": 100,  # quiet time across the whole tree before a flush
    "settle_quick_ms": 10,  # the quiet a lone, whole change waits instead (watch.Coalescer)
    "settle_cap_ms": 3000,  # a burst that never goes quiet is flushed after this
    "delete_grace_ms": 300,  # a vanished story must stay absent this long
    "git_lock_cap_s": 10.0,  # wait at most this long for .git/index.lock to go
    "max_file_bytes": 1024 * 1024,
    "rescan_interval_s": 300.0,  # safety-net stat pass
    "writer_queue": 64,  # batches waiting for the writer before back-pressure
    "compact_updates": 1000,  # persisted pycrdt updates squashed into one snapshot; 0: never
    "log_format": "auto",
    "log_level": "info",
    # `pipelined publish`: the y-websocket room (ws://HOST:PORT/ROOM) and a bearer token
    "publish_server": None,
    "publish_token_file": None,
}
PATH_SETTINGS = ("root", "db", "publish_token_file")
_RANGES = (("settle_ms", 1, 60_000), ("settle_quick_ms", 1, 60_000),
           ("settle_cap_ms", 1, 600_000), ("delete_grace_ms", 0, 600_000),
           ("max_file_bytes", 1, 1 << 30), ("writer_queue", 1, 100_000),
           ("compact_updates", 0, 10_000_000))


def _ascii_word(text: str, more: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in more) for c in text)


def is_stage_name(stage: str) -> bool:
    """`<digits>_<name>`: at most MAX_STAGE_DIGITS ASCII digits, then a letter or digit,
    then letters, digits, `_` and `-`."""
    number, underscore, name = stage.partition("_")
    return (bool(underscore) and 0 < len(number) <= MAX_STAGE_DIGITS
            and number.isascii() and number.isdigit()
            and name[:1].isascii() and name[:1].isalnum() and _ascii_word(name, "_-"))


def _check_stages(stages: tuple[str, ...]) -> None:
    if not stages:
        raise ConfigError("stages", list(stages), "at least one stage is needed")
    for stage in stages:
        if not is_stage_name(stage):
            raise ConfigError("stages", stage,
                              "a stage is named <digits>_<name>, at most 18 digits")
    if len(set(stages)) != len(stages):
        raise ConfigError("stages", list(stages), "a stage is listed twice")


def validate(values: Mapping[str, object]) -> None:
    """Raise ConfigError naming the first bad setting of a whole set of them."""
    _check_stages(values["stages"])  # type: ignore[arg-type]
    for name, least, most in _RANGES:
        value = values[name]
        if not least <= value <= most:  # type: ignore[operator]
            raise ConfigError(name, value, f"must be from {least} to {most}")
    if values["delete_grace_ms"] < 0:  # type: ignore[operator]
        raise ConfigError("delete_grace_ms", values["delete_grace_ms"], "must not be negative")
    if values["settle_cap_ms"] < values["settle_ms"]:  # type: ignore[operator]
        raise ConfigError("settle_cap_ms", values["settle_cap_ms"], "must be >= settle_ms")
    if values["rescan_interval_s"] <= 0:  # type: ignore[operator]
        raise ConfigError("rescan_interval_s", values["rescan_interval_s"], "must be positive")
    if values["git_lock_cap_s"] < 0:  # type: ignore[operator]
        raise ConfigError("git_lock_cap_s", values["git_lock_cap_s"], "must not be negative")
    if values["log_format"] not in LOG_FORMATS:
        raise ConfigError("log_format", values["log_format"], f"one of {', '.join(LOG_FORMATS)}")
    server = values["publish_server"]
    if server is not None and not str(server).startswith(("ws://", "wss://")):
        raise ConfigError("publish_server", server, "expected ws://HOST:PORT/ROOM or wss://...")
    if str(values["log_level"]).lower() not in LOG_LEVELS:
        raise ConfigError("log_level", values["log_level"], f"one of {', '.join(LOG_LEVELS)}")


def _state_dir(env: Mapping[str, str]) -> str:
    if env.get("STATE_DIRECTORY"):
        # systemd may pass several, colon-separated; the first is ours.
        return env["STATE_DIRECTORY"].split(":")[0]
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "pipelined")


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


def default_db_path(root: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> str:
    """`<state dir>/<root name>-<hash of the absolute root>.db`: two roots never share."""
    absolute = os.path.realpath(root)
    digest = _sha256(absolute.encode()).hexdigest()[:10]
    name = "".join(c if _ascii_word(c, "._-") else "_" for c in os.path.basename(absolute))
    return os.path.join(_state_dir(os.environ if env is None else env),
                        f"{name or 'root'}-{digest}.db")


def default_config_path(env: Mapping[str, str] | None = None) -> str:
    """`$XDG_CONFIG_HOME/pipelined/config.toml` (or `~/.config/...`)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pipelined", "config.toml")


def _path(value: object) -> str:
    """A path setting as given, `~` expanded; "" is the current folder (as `Path("")`)."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return os.path.expanduser(text) or "."


def _optional_path(value: object) -> str | None:
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


_CONVERT: dict[str, Callable[[object], object]] = {
    "root": _path, "db": _optional_path, "stages": _stages,
    "publish_server": _text, "publish_token_file": _optional_path,
    **dict.fromkeys(("settle_ms", "settle_quick_ms", "settle_cap_ms", "delete_grace_ms",
                     "max_file_bytes", "writer_queue", "compact_updates"), _whole),
    **dict.fromkeys(("rescan_interval_s", "git_lock_cap_s"), _seconds),
    **dict.fromkeys(("log_format", "log_level"), _word),
}


def _coerce(name: str, value: object) -> object:
    """Turn a TOML, environment or flag value into the setting's type, or raise
    ConfigError naming the setting, the value and what it should be."""
    convert = _CONVERT.get(name)
    if convert is None:
        raise ConfigError(name, value, "unknown setting")
    try:
        return convert(value)
    except ValueError as exc:
        raise ConfigError(name, value, f"expected {exc}") from None


def parse(text: str, source: str = "config") -> dict[str, object]:
    """Parse TOML config text into typed settings; unknown keys are errors."""
    from pipelined.flattoml import loads  # noqa: PLC0415 - only when there is a config file

    raw = loads(text)  # a file as simple as pipelined's own, without tomllib's imports
    if raw is None:
        import tomllib  # noqa: PLC0415

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"not valid TOML ({exc})") from None
    return {key: _coerce(key, value) for key, value in raw.items()}


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    settings: dict[str, object] = {}
    for name in DEFAULTS:
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
        number, underscore, alias = stage.partition("_")
        if not (underscore and number.isascii() and number.isdigit()):
            alias = stage
        if wanted in (stage.casefold(), alias.casefold()):
            return stage
    raise UnknownStage(name, stages)


def find_root(start: str, stages: Sequence[str]) -> tuple[str, str | None] | None:
    """The nearest folder from `start` (absolute) upward holding a `pipelined.toml` or
    every stage folder: (that folder, its pipelined.toml or None); None when none does."""
    folder = start
    while True:
        project = os.path.join(folder, PROJECT_FILE)
        if os.path.isfile(project):
            return folder, project
        if all(os.path.isdir(os.path.join(folder, stage)) for stage in stages):
            return folder, None
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _read(path: str) -> dict[str, object]:
    """A config file's settings; a relative `root` or `db` is relative to its folder."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", path, f"cannot read it ({exc})") from None
    folder = absolute(os.path.dirname(path))
    return {key: os.path.join(folder, str(value)) if key in PATH_SETTINGS and value is not None
            else value for key, value in parse(text, source=path).items()}


def resolve(
    flags: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, object]:
    """Every setting (paths as strings), flags layered over environment over config
    file over defaults, validated.

    `config_file` is an explicit path (it must exist; then it is the only file
    read); without one, `$PIPELINED_CONFIG`, else the user's default file when it
    exists, under the root's own `pipelined.toml`. Without a root in any layer, it
    is looked for from `cwd` upward (see the module doc): finding none is a
    RootError, unless a database is named (a read needs no root).
    """
    env = os.environ if env is None else env
    path = None if config_file is None else os.fspath(config_file)
    explicit = path is not None
    if path is None and env.get("PIPELINED_CONFIG"):
        path, explicit = env["PIPELINED_CONFIG"], True
    if path is None:
        path = default_config_path(env)
    settings: dict[str, object] = {}
    if explicit or os.path.isfile(path):
        settings.update(_read(path))
    override = _from_env(env)
    override.update({k: _coerce(k, v) for k, v in flags.items() if v is not None})
    start = absolute(os.getcwd() if cwd is None else os.fspath(cwd))
    stages: tuple[str, ...] = (override.get("stages") or settings.get("stages")  # type: ignore[assignment]
                               or DEFAULT_STAGES)
    root = override.get("root") or settings.get("root")
    project: str | None = None
    if root is None:
        found = find_root(start, stages)
        if found is None and settings.get("db") is None and override.get("db") is None:
            raise RootError(start, "no stories here: neither this folder nor one above it "
                            f"holds a {PROJECT_FILE} or the stage folders "
                            f"{', '.join(s + '/' for s in stages)} (give --root, or make "
                            "one with `pipelined init`)")
        root, project = found if found is not None else (start, None)
    elif os.path.isfile(os.path.join(str(root), PROJECT_FILE)):
        project = os.path.join(str(root), PROJECT_FILE)
    if project is not None and not explicit:
        # The root's own settings; the folder holding the file is the root, whatever
        # its `root` says (a copied or cloned project must not point at the original).
        settings.update({k: v for k, v in _read(project).items() if k != "root"})
    settings.update(override)
    settings["root"] = root
    values = {**DEFAULTS, **settings}
    validate(values)
    return values


class Located:
    """Where a read command reads: the root, the database file and the stages (the
    quick path's stand-in for `config.Config`, with string paths)."""

    __slots__ = ("db_path", "root", "stages")

    def __init__(self, values: Mapping[str, object]) -> None:
        self.root = clean_path(str(values["root"]))
        db = values["db"]
        self.db_path = clean_path(str(db)) if db is not None else default_db_path(self.root)
        self.stages: tuple[str, ...] = values["stages"]  # type: ignore[assignment]


def locate(flags: Mapping[str, object], config_file: str | None = None) -> Located:
    """The settings from `flags` and the other layers, for a read command."""
    return Located(resolve(flags, config_file=config_file))
