"""What a database path holds, found out before anything is created beside it.

`pipelined run` and `pipelined rebuild` create files around the path they are
given (its folder, `<db>.lock`, `<db>.heartbeat`, `-wal` and `-shm`) and then
write into it. `check_before_writing` runs first and refuses what is not
pipelined's to write: a device, a FIFO, a folder, a file that is not SQLite,
another application's SQLite database, a database a newer pipelined wrote.
`check_before_reading` does the same for the read commands.

This module must never create, lock, truncate or write a file, nor open one
in a way that makes SQLite do so: a refused start leaves the folder exactly
as it was. SQLite is read through the `unix-none` VFS in exclusive locking
mode, which keeps the WAL index in the process's memory instead of creating
a `-shm` file, so tables that a crashed daemon left only in its `-wal` are
seen too (`immutable=1` would hide them behind an empty-looking main file).
"""

from __future__ import annotations

import os
import stat

import apsw

from pipelined.errors import DatabaseBusy, DatabaseCorrupt, DatabaseError, MigrationError
from pipelined.paths import absolute
from pipelined.reading import NotRegularFile, read_regular_file
from pipelined.store.connection import REBUILD_HINT
from pipelined.store.heartbeat import heartbeat_path
from pipelined.store.lock import holder, lock_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

__all__ = ["DatabaseSurvey", "check_before_reading", "check_before_writing", "survey"]

SQLITE_HEADER = b"SQLite format 3\x00"
SHOWN_TABLES = 8  # an error line names at most this many tables
# The table apply_migrations creates first, in its own commit: every database
# pipelined has written to holds it, with these columns.
MIGRATIONS_TABLE = "schema_migrations"
MIGRATIONS_COLUMNS = frozenset({"name", "checksum", "applied_at"})


class DatabaseSurvey:
    """What is at a database path, as far as it can be seen without changing it.

    A plain class: every read command with no daemon running makes one, and a
    dataclass or a typed NamedTuple (typing, re, enum) costs more to import
    than the read itself.
    """

    __slots__ = ("damage", "exists", "migrations", "sqlite", "tables")

    def __init__(self, exists: bool, sqlite: bool = False, tables: tuple[str, ...] = (),
                 migrations: tuple[str, ...] | None = None, damage: str | None = None) -> None:
        self.exists = exists
        self.sqlite = sqlite  # empty, or starts with the SQLite header
        self.tables = tables  # tables and views, sorted; SQLite's own left out
        self.migrations = migrations  # recorded in our schema_migrations; None: none
        self.damage = damage  # SQLite's error when the schema could not be read

    def __repr__(self) -> str:
        return (f"DatabaseSurvey(exists={self.exists!r}, sqlite={self.sqlite!r}, "
                f"tables={self.tables!r}, migrations={self.migrations!r}, "
                f"damage={self.damage!r})")

    @property
    def ours(self) -> bool:
        """It holds pipelined's schema_migrations table."""
        return self.migrations is not None

    @property
    def foreign(self) -> bool:
        """It holds tables but not pipelined's: another application's database."""
        return not self.ours and bool(self.tables)


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return words
    return None if stat.S_ISREG(mode) else "not a regular file"


def _tables(conn: apsw.Connection) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    names = tuple(sorted(str(r[0]) for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")))
    if MIGRATIONS_TABLE not in names:
        return names, None
    columns = {str(r[1]) for r in conn.execute(f"PRAGMA table_info({MIGRATIONS_TABLE})")}
    if not columns >= MIGRATIONS_COLUMNS:  # Rails, golang-migrate, … use the same name
        return names, None
    recorded = tuple(sorted(str(r[0]) for r in conn.execute(
        f"SELECT name FROM {MIGRATIONS_TABLE}")))
    return names, recorded


def _read(path: StrPath, wal: bool) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The tables and recorded migrations, read without creating or locking a file.

    With `wal`, through `unix-none` in exclusive mode: the -wal is read into
    memory, no -shm is made, no lock is taken (a read racing a writer may
    fail; the caller then reads the main file alone). Without, `immutable=1`:
    the main file only, as it was at its last checkpoint.
    """
    if wal:
        conn = apsw.Connection(os.fspath(path), flags=apsw.SQLITE_OPEN_READONLY, vfs="unix-none")
    else:
        conn = apsw.Connection(_file_uri(path) + "?immutable=1",
                               flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        if wal:  # before the first read: the WAL index then lives in this process
            conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
        return _tables(conn)
    finally:
        conn.close()


# What a `file:` URI's path may hold unencoded (urllib.parse.quote's safe set and "/").
_URI_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def _file_uri(path: StrPath) -> str:
    """The `file:` URI of the absolute path, as `Path.as_uri` makes it: every other
    byte percent-encoded (a `?`, `#` or `%` in a name must not end or bend it), and
    `..` left for the kernel (after a symbolic link it is not the folder above)."""
    return "file://" + "".join(chr(byte) if byte in _URI_SAFE else f"%{byte:02X}"
                               for byte in os.fsencode(absolute(path)))


def _has_frames(path: StrPath) -> bool:
    """A non-empty -wal beside the database, and SQLite's `unix-none` VFS to read it."""
    try:
        size = os.lstat(f"{path}-wal").st_size
    except OSError:
        return False
    return size > 0 and "unix-none" in apsw.vfs_names()


def _check_file_or_missing(path: StrPath) -> bool:
    """True if a regular file is at `path`, False if nothing; else DatabaseError."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DatabaseError(path, f"it is a symbolic link to {os.readlink(path)}, which "
                                "does not exist; give --db the real path") from None
        return False
    except OSError as exc:
        raise DatabaseError(path, f"cannot look at it ({exc.strerror or exc})") from None
    kind = _kind(info.st_mode)
    if kind is not None:
        raise DatabaseError(path, f"it is {kind}, not a database file; give --db the path "
                            "of a file (it is created if missing)")
    return True


def _read_header(path: StrPath) -> bytes:
    try:
        return read_regular_file(path, len(SQLITE_HEADER))
    except NotRegularFile as exc:  # renamed in since the stat
        raise DatabaseError(path, f"it is {_kind(exc.mode)}, not a database file; give "
                            "--db the path of a file (it is created if missing)") from None


def survey(path: StrPath) -> DatabaseSurvey:
    """What is at `path`; DatabaseError if it is not a file or cannot be read.

    A missing path is a survey with `exists` False. A file that is not SQLite
    is one with `sqlite` False. A schema SQLite cannot read (damaged pages)
    is one with `damage` set: whose database it was cannot be told then.
    """
    if not _check_file_or_missing(path):
        return DatabaseSurvey(exists=False)
    try:  # non-blocking, checked on the descriptor: a FIFO renamed in since the stat
        header = _read_header(path)
    except OSError as exc:
        raise DatabaseError(path, f"cannot read it ({exc.strerror or exc})") from None
    if header and header != SQLITE_HEADER:
        return DatabaseSurvey(exists=True)
    # An empty main file may still have a -wal (a daemon killed during its
    # first start), so SQLite reads even an empty file here. The -wal is read
    # only when it holds frames: as the last connection, that read would delete
    # an empty -wal (or one it made itself) on close, and without frames the
    # main file alone is exact.
    attempts = (True, False) if _has_frames(path) else (False,)
    error: apsw.Error | None = None
    for wal in attempts:
        try:
            tables, migrations = _read(path, wal)
        except apsw.Error as exc:  # a hot journal, an unreadable -wal, a racing writer
            error = error or exc
            continue
        return DatabaseSurvey(exists=True, sqlite=True, tables=tables, migrations=migrations)
    assert error is not None
    if isinstance(error, apsw.CorruptError | apsw.NotADBError):
        return DatabaseSurvey(exists=True, sqlite=True, damage=str(error))
    raise DatabaseError(path, f"cannot read it ({error})")


def _listed(tables: tuple[str, ...]) -> str:
    shown = ", ".join(tables[:SHOWN_TABLES])
    more = len(tables) - SHOWN_TABLES
    return f"{shown}, … {more} more" if more > 0 else shown


def _not_sqlite(path: StrPath) -> DatabaseError:
    return DatabaseError(path, "not a SQLite database (it does not start with the SQLite "
                         "header); give --db another file, or if it is pipelined's own "
                         "database, damaged, move it aside and run `pipelined rebuild`")


def _check_beside(db_path: StrPath) -> None:
    """The files pipelined keeps beside the database, where they exist, are plain files.

    The lock and the heartbeat are opened with O_CREAT and rewritten: through
    a symbolic link that would overwrite whatever it points to.
    """
    for companion in (lock_path(db_path), heartbeat_path(db_path),
                      *(os.fspath(db_path) + s for s in ("-wal", "-shm", "-journal"))):
        try:
            info = os.lstat(companion)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseError(db_path, f"cannot look at {companion} "
                                f"({exc.strerror or exc})") from None
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else _kind(info.st_mode)
        if kind is not None:
            raise DatabaseError(db_path, f"{companion} beside it is {kind}, not a file "
                                "pipelined made; move it away")


def _check_folder_can_be_made(db_path: StrPath) -> None:
    """The database's folder exists or can be created (nothing is created here)."""
    folder = os.path.dirname(absolute(db_path))
    while not os.path.exists(folder) and folder != os.path.dirname(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise DatabaseError(db_path, f"its folder cannot be created: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(db_path, f"cannot create it: the folder {folder} is not writable")


def _check_migrations_known(db_path: StrPath, recorded: tuple[str, ...]) -> None:
    from pipelined.store.migrations import known_migrations  # noqa: PLC0415 - read commands' start

    unknown = sorted(set(recorded) - {m.name for m in known_migrations()})
    if unknown:  # the same words as apply_migrations, which checks again under the lock
        raise MigrationError(
            db_path, f"it has migration {unknown[-1]} that this pipelined does not know "
            "(written by a newer version); upgrade pipelined")


def check_before_writing(db_path: StrPath, *, rebuilding: bool = False) -> None:
    """Raise unless pipelined may create its files beside `db_path` and write into it.

    Accepted: no file yet (its folder can be created), an empty file, a SQLite
    database without tables, and pipelined's own database whose migrations
    this code knows. `rebuilding` also accepts a damaged SQLite database:
    `pipelined rebuild` moves it aside. Reads only; see the module docstring.
    """
    _check_file_or_missing(db_path)  # first: a device or a folder is never opened
    _check_beside(db_path)
    pid = holder(db_path)
    if pid is not None:  # before reading it: a read racing the daemon's writes may fail
        raise DatabaseBusy(db_path, pid)
    found = survey(db_path)
    if not found.exists:
        _check_folder_can_be_made(db_path)
        return
    if not found.sqlite:
        raise _not_sqlite(db_path)
    if found.damage is not None:
        if rebuilding:
            return
        raise DatabaseCorrupt(db_path, f"{found.damage}; {REBUILD_HINT}")
    if found.foreign:
        raise DatabaseError(db_path, f"it is another application's database (tables: "
                            f"{_listed(found.tables)}); pipelined only uses its own")
    if found.migrations:
        _check_migrations_known(db_path, found.migrations)


def check_before_reading(db_path: StrPath) -> None:
    """Raise unless `db_path` is missing or pipelined's own database.

    A read command calls it before it opens the database read-only, which on a
    WAL database would create -wal and -shm files beside a foreign file. A
    missing file, and damage, are left to the opening, which names them.
    """
    if _check_file_or_missing(db_path) and holder(db_path) is not None:
        return  # a daemon runs on it, so it is pipelined's; reading now could race it
    found = survey(db_path)
    if not found.exists or found.damage is not None:
        return
    if not found.sqlite:
        raise _not_sqlite(db_path)
    if not found.ours:
        held = (f"another application's tables: {_listed(found.tables)}" if found.tables
                else "no tables")
        raise DatabaseError(db_path, f"not a pipelined database (it holds {held})")
