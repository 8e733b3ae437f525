"""The errors a user can cause. Each carries the bad value and reads as one line.

The CLI turns every `PipelinedError` into `Error: <message>` and a non-zero exit
in exactly one place; nothing else in the package prints or exits.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from _typeshed import StrPath  # a path as given: messages show it as str() does

__all__ = [
    "EXIT_NEEDS_A_PERSON",
    "AmbiguousStory",
    "CommitFailed",
    "ConfigError",
    "DatabaseBusy",
    "DatabaseCorrupt",
    "DatabaseError",
    "EditConflict",
    "EditRefused",
    "FieldError",
    "InotifyLimitError",
    "MigrationError",
    "PipelinedError",
    "RootError",
    "SearchQueryError",
    "StoryClaimed",
    "StoryNotFound",
    "SyncTimeout",
    "TitleError",
    "UnknownStage",
]


def _shown(value: object, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: a 10 kB id must not make a 10 kB error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class PipelinedError(Exception):
    """Base of every error pipelined reports to a user."""

    exit_code = 1
    # False where starting again cannot help until a person acts (a bad setting, a
    # damaged database): the daemon then exits EXIT_NEEDS_A_PERSON, which the units
    # list in RestartPreventExitStatus=, instead of being restarted in a loop.
    restart_helps = True


# sysexits.h's EX_CONFIG: what `pipelined run` exits with for such an error.
EXIT_NEEDS_A_PERSON = 78


class ConfigError(PipelinedError):
    """A setting has a bad value."""

    exit_code = 2
    restart_helps = False

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"bad setting {field}={value!r}: {why}")


class RootError(PipelinedError):
    """The stories root or one of its stage folders is missing or unusable."""

    def __init__(self, path: StrPath, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: {why}")


class DatabaseBusy(PipelinedError):
    """Another daemon already holds this database."""

    def __init__(self, path: StrPath, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"database {path} is held by a running pipelined ({holder})")


class DatabaseError(PipelinedError):
    """The database is missing, unreadable or not a pipelined database."""

    def __init__(self, path: StrPath, why: str) -> None:
        self.path = path
        super().__init__(f"database {path}: {why}")


class DatabaseCorrupt(DatabaseError):
    """The database file is damaged; `pipelined rebuild` makes a fresh one."""

    restart_helps = False


class InotifyLimitError(PipelinedError):
    """The kernel refused an inotify watch or instance: a per-user limit is reached.

    Under systemd's ProcSubset=pid the daemon cannot read the limit, so the
    message names the sysctl to raise instead of its value.
    """

    def __init__(self, path: StrPath, sysctl: str, why: str, suggested: int) -> None:
        self.path = path
        self.sysctl = sysctl
        super().__init__(f"cannot watch {path}: {why}; raise the sysctl {sysctl} "
                         f"(e.g. `sysctl -w {sysctl}={suggested}`, and a file in "
                         "/etc/sysctl.d/ to keep it)")


class MigrationError(PipelinedError):
    """The database's schema history does not match the code's migrations."""

    restart_helps = False

    def __init__(self, path: StrPath, why: str) -> None:
        self.path = path
        super().__init__(f"database {path}: {why}")


class StoryNotFound(PipelinedError):
    """No story with this id is in the database."""

    def __init__(self, story_id: str) -> None:
        self.story_id = story_id
        super().__init__(f"no story {_shown(story_id)}")


class UnknownStage(PipelinedError):
    """A stage that is not one of the configured stage folders."""

    def __init__(self, stage: str, stages: Sequence[str]) -> None:
        self.stage = stage
        self.stages = tuple(stages)
        super().__init__(f"unknown stage {_shown(stage)} (stages: {', '.join(stages)})")


class AmbiguousStory(PipelinedError):
    """A story reference that matches more than one story (a bare number two ids
    share) or file (one id in two stages: a conflict)."""

    def __init__(self, ref: str, paths: Sequence[str]) -> None:
        self.ref = ref
        self.paths = tuple(paths)
        ids = {path.rsplit("/", 1)[-1].removesuffix(".md") for path in paths}
        hint = ("give the full id" if len(ids) > 1  # a number two ids share
                else "the same id in two stages is a conflict; remove one copy")
        super().__init__(f"{_shown(ref)} matches more than one story file: {', '.join(paths)} "
                         f"({hint}; `pipelined doctor` shows conflicts)")


class TitleError(PipelinedError):
    """A new story's title or type cannot be used."""

    exit_code = 2

    def __init__(self, value: str, why: str) -> None:
        self.value = value
        super().__init__(f"bad value {value!r}: {why}")


class SyncTimeout(PipelinedError):
    """The daemon did not show a change in the database within the wait."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"{what}, but the running daemon has not shown it in the database "
                         f"within {timeout_s:g} s (see `pipelined status`)")


class SearchQueryError(PipelinedError):
    """A search query FTS5 cannot run (unbalanced quote, bad operator, empty)."""

    def __init__(self, query: str, why: str) -> None:
        self.query = query
        super().__init__(f"bad search query {query!r}: {why} (plain words need no quoting; "
                         "see `pipelined search --help`)")


class CommitFailed(PipelinedError):
    """The writer met an error that does not pass by itself (a constraint, a bug):
    retrying would hide it behind a 'degraded' that never ends."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"the database writer cannot commit ({type(cause).__name__}: "
                         f"{cause}), an error that does not pass by itself; stopping so that "
                         "a restart catches up from the folders (please report it)")


class FieldError(PipelinedError):
    """A field to set that does not exist, or a value of the wrong kind for it."""

    exit_code = 2

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={_shown(value)}: {why}")


class EditRefused(PipelinedError):
    """A story file that cannot be edited safely line by line; nothing was written."""

    def __init__(self, path: StrPath, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: cannot edit it: {why}; nothing was written")


class EditConflict(PipelinedError):
    """The story file changed between reading and writing it; nothing was written."""

    def __init__(self, path: StrPath, why: str) -> None:
        self.path = path
        super().__init__(f"{path}: {why}; nothing was written (read it again and retry)")


class StoryClaimed(PipelinedError):
    """A claim of a story another agent holds."""

    def __init__(self, story_id: str, agent: str) -> None:
        self.story_id = story_id
        self.agent = agent
        super().__init__(f"{story_id} is claimed by {agent!r}")

