"""The errors a user can cause. Each carries the bad value and reads as one line.

The CLI turns every `PipelinedError` into `Error: <message>` and a non-zero exit
in exactly one place; nothing else in the package prints or exits.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DatabaseBusy",
    "DatabaseError",
    "MigrationError",
    "PipelinedError",
    "RootError",
    "StoryNotFound",
]


class PipelinedError(Exception):
    """Base of every error pipelined reports to a user."""

    exit_code = 1


class ConfigError(PipelinedError):
    """A setting has a bad value."""

    exit_code = 2

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"bad setting {field}={value!r}: {why}")


class RootError(PipelinedError):
    """The stories root or one of its stage folders is missing or unusable."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: {why}")


class DatabaseBusy(PipelinedError):
    """Another daemon already holds this database."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"database {path} is held by a running pipelined ({holder})")


class DatabaseError(PipelinedError):
    """The database is missing, unreadable or not a pipelined database."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"database {path}: {why}")


class MigrationError(PipelinedError):
    """The database's schema history does not match the code's migrations."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        super().__init__(f"database {path}: {why}")


class StoryNotFound(PipelinedError):
    """No story with this id is in the database."""

    def __init__(self, story_id: str) -> None:
        self.story_id = story_id
        super().__init__(f"no story {story_id!r}")
