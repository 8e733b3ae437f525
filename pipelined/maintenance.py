"""Whole-database operations: `pipelined rebuild` and `pipelined backup`.

`rebuild` needs the daemon stopped (it takes the daemon's lock): it moves the
old database aside, never deleting it, and builds a fresh one from the folders,
keeping the story-number high-water mark of the old one when it can be read.
What is not pipelined's (another application's database, a file that is not
SQLite, a device) it refuses before it creates or moves anything.
`backup` runs beside a live daemon: SQLite's online backup copies one
consistent snapshot through a read-only connection.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from pipelined.config import Config
from pipelined.content import ContentMap
from pipelined.errors import DatabaseError
from pipelined.layout import check_readable_stages, check_root
from pipelined.schema import parse_number
from pipelined.shaping import stored_with_settings
from pipelined.store.connection import open_read_only, open_writer, transaction
from pipelined.store.lock import DaemonLock
from pipelined.store.migrations import apply_migrations
from pipelined.store.preflight import check_before_reading, check_before_writing
from pipelined.store.search_build import merge_search_slice
from pipelined.store.writer import write_batches

__all__ = ["BackupResult", "RebuildResult", "backup", "rebuild"]


@dataclass(frozen=True)
class RebuildResult:
    db: str
    old_db: str | None
    stories: int
    high_water: int
    errors: int


@dataclass(frozen=True)
class BackupResult:
    source: str
    target: str
    bytes: int


def _old_high_water(db_path: Path) -> int:
    """The old database's high-water mark, or 0 if it cannot be read (corrupt, absent)."""
    if not db_path.exists():
        return 0
    try:
        conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error:
        return 0
    found = [0]
    try:  # each source on its own: a damaged table must not hide the others
        for sql in ("SELECT max(high_water) FROM story_numbers",
                    "SELECT id FROM pipeline_items",
                    "SELECT story_id FROM file_signatures"):
            try:
                for (value,) in conn.execute(sql):
                    number = parse_number(str(value or 0).split("_", 1)[0])
                    if number is not None:
                        found.append(number)
            except apsw.Error:
                continue
    finally:
        conn.close()
    return max(found)


def _move_aside(db_path: Path) -> Path | None:
    """Rename the database and its -wal/-shm to `<db>.old-<time>`; the new name.

    A name already taken (two rebuilds within a second) gets a number: an
    earlier kept database is never replaced.
    """
    if not db_path.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = db_path.with_name(f"{db_path.name}.old-{stamp}")
    number = 1
    while any(os.path.lexists(target.with_name(target.name + s)) for s in ("", "-wal", "-shm")):
        number += 1
        target = db_path.with_name(f"{db_path.name}.old-{stamp}-{number}")
    for suffix in ("", "-wal", "-shm"):
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            os.replace(source, target.with_name(target.name + suffix))
    return target


def rebuild(config: Config) -> RebuildResult:
    """A fresh database from the folders; the old file is kept beside it."""
    # pycrdt and the parser for `rebuild` only: `backup` shares this module.
    from pipelined.state import PipelineState  # noqa: PLC0415
    from pipelined.sync import Reconciler  # noqa: PLC0415

    root = check_root(config.root, config.stages)
    check_readable_stages(root, config.stages)  # before the old file is moved aside
    db_path = config.db_path
    # Before the lock file: another application's file is never moved aside.
    check_before_writing(db_path, rebuilding=True)
    lock = DaemonLock(db_path)
    lock.acquire()  # DatabaseBusy, naming the pid, while a daemon runs
    try:
        high_water = _old_high_water(db_path)
        old = _move_aside(db_path)
        conn = open_writer(db_path)
        try:
            apply_migrations(conn, db_path)
            state = PipelineState(int.from_bytes(os.urandom(4), "big"))
            reconciler = Reconciler(root, config.stages, state, ContentMap(), {},
                                    config.max_file_bytes, high_water)
            touched, _checked = reconciler.changed_ids()
            result = reconciler.reconcile(touched, confirm_absent=True)
            batch = result.batch
            batch.meta["client_id"] = str(state.doc.client_id)
            batch.meta["stored_with"] = stored_with_settings(config.max_file_bytes)
            batch.high_water = max(high_water, reconciler.high_water)
            write_batches(conn, [batch])
            with transaction(conn):  # what the daemon's writer would merge once idle
                while merge_search_slice(conn):
                    pass
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        errors = sum(1 for row in batch.upserts if row.errors)
        return RebuildResult(str(db_path), str(old) if old else None, len(state),
                             batch.high_water, errors)
    finally:
        lock.release()


def backup(db_path: Path, target: Path) -> BackupResult:
    """A consistent copy of the database, taken while the daemon may be running.

    TARGET must be a new name: an existing file, a device (`/dev/null`), a FIFO
    or a symbolic link is refused, and the file is created exclusively, so two
    backups never write into one file. A copy that fails is removed.
    """
    if os.path.lexists(target):
        raise DatabaseError(target, "already exists; choose a new file name")
    check_before_reading(db_path)  # another application's database is not backed up
    source = open_read_only(db_path)
    try:
        _create_new(target)
        try:
            _copy_into(source, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    finally:
        source.close()
    return BackupResult(str(db_path), str(target), target.stat().st_size)


def _create_new(target: Path) -> None:
    """Create TARGET empty, or DatabaseError if anything is at that name now."""
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    except FileExistsError:
        raise DatabaseError(target, "already exists; choose a new file name") from None
    except OSError as exc:
        raise DatabaseError(target, f"cannot create it ({exc.strerror or exc})") from None


def _copy_into(source: apsw.Connection, target: Path) -> None:
    try:
        dest = apsw.Connection(str(target))
    except apsw.Error as exc:
        raise DatabaseError(target, f"cannot create it ({exc})") from None
    try:
        with dest.backup("main", source, "main") as copy:
            copy.step(-1)  # every page in one step: one consistent snapshot
        problems = [str(r[0]) for r in dest.execute("PRAGMA quick_check(1)")]
        if problems != ["ok"]:
            raise DatabaseError(target, f"the copy failed its check: {problems[0]}")
    finally:
        dest.close()
