"""A `--db` that is not pipelined's is refused before anything is written.

Another application's SQLite database, a file that is not SQLite, a device, a
FIFO, a folder, a database a newer pipelined wrote: `pipelined run` refuses
with one `Error:` line and exit 1, and the database's folder is left exactly
as it was (every name, size and modification time). `rebuild`, `backup` and
`doctor` refuse such a file the same way.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import apsw
import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories

from pipelined.errors import EXIT_NEEDS_A_PERSON, DatabaseError
from pipelined.store.migrations import apply_migrations
from pipelined.store.preflight import _read_header, check_before_writing, survey

Listing = dict[str, tuple[int, int, int]]


def listing(folder: Path) -> Listing:
    """Every entry of a folder: its mode, size and modification time, links not followed."""
    entries = {}
    for entry in os.scandir(folder):
        info = entry.stat(follow_symlinks=False)
        entries[entry.name] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return entries


def refused(daemon: DaemonProcess, exit_code: int = 1) -> list[str]:
    """Start the daemon, which must exit `exit_code` by itself; the lines it printed."""
    proc = daemon.spawn()
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        pytest.fail(f"the daemon ran instead of refusing to start:\n{daemon.log_tail()}")
    assert code == exit_code, daemon.log_tail()
    return daemon.log_tail(200).rsplit("--- start", 1)[1].splitlines()[1:]


def make_foreign(path: Path, wal: bool = False) -> None:
    """Another application's database: three tables with rows."""
    conn = apsw.Connection(str(path))
    if wal:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL);"
                 "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT);"
                 "CREATE TABLE notes(body TEXT);"
                 "INSERT INTO invoices(total) VALUES (12.5), (99);"
                 "INSERT INTO customers(name) VALUES ('ACME')")
    conn.close()


def copy_mid_write(target: Path, build: Callable[[apsw.Connection], None]) -> None:
    """A WAL database copied while its writer still runs, as a crash leaves it: what
    `build` wrote sits only in the -wal, and the main file looks empty."""
    live = target.parent / "live" / "live.db"
    live.parent.mkdir()
    conn = apsw.Connection(str(live))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA wal_autocheckpoint=0")
    build(conn)
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{live}{suffix}", f"{target}{suffix}")
    conn.close()
    shutil.rmtree(live.parent)
    hidden = apsw.Connection(target.absolute().as_uri() + "?immutable=1",
                             flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:  # the case is real: the main file alone holds no table
        assert hidden.execute("SELECT count(*) FROM sqlite_master").fetchall() == [(0,)]
    finally:
        hidden.close()


def foreign_tables(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY); CREATE TABLE customers(x)")


def pipelined_tables(conn: apsw.Connection) -> None:
    apply_migrations(conn, Path("crashed.db"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


class TestRefusedStarts:
    def test_another_applications_database(self, stories: Stories, daemon: DaemonProcess,
                                           folder: Path) -> None:
        """A SQLite database with other tables and no schema_migrations: one line naming
        its tables, exit 1; no table added, no lock, heartbeat, -wal or -shm beside it."""
        daemon.db = folder / "app.db"
        make_foreign(daemon.db)
        before, content = listing(folder), daemon.db.read_bytes()
        assert refused(daemon) == [
            f"Error: database {daemon.db}: it is another application's database (tables: "
            "customers, invoices, notes); pipelined only uses its own"]
        assert listing(folder) == before
        assert daemon.db.read_bytes() == content

    def test_foreign_tables_only_in_the_wal(self, stories: Stories, daemon: DaemonProcess,
                                            folder: Path) -> None:
        """A foreign WAL database whose tables sit only in its -wal (the main file looks
        empty) is refused too, and no -shm is created to read it."""
        daemon.db = folder / "app.db"
        copy_mid_write(daemon.db, foreign_tables)
        before = listing(folder)
        assert refused(daemon) == [
            f"Error: database {daemon.db}: it is another application's database (tables: "
            "customers, invoices); pipelined only uses its own"]
        assert listing(folder) == before

    def test_not_a_sqlite_file(self, stories: Stories, daemon: DaemonProcess,
                               folder: Path) -> None:
        """A file without the SQLite header: one line, and nothing created beside it."""
        daemon.db = folder / "notes.txt"
        daemon.db.write_text("my notes, not a database\n" * 100)
        before = listing(folder)
        lines = refused(daemon)
        assert len(lines) == 1
        assert lines[0].startswith(f"Error: database {daemon.db}: not a SQLite database")
        assert listing(folder) == before

    @pytest.mark.parametrize("kind", ["folder", "FIFO (named pipe)"])
    def test_not_a_regular_file(self, stories: Stories, daemon: DaemonProcess, folder: Path,
                                kind: str) -> None:
        """A folder or a FIFO given as --db: one line saying what it is; nothing created
        (a FIFO is never opened, so nothing waits on it)."""
        daemon.db = folder / "pipeline.db"
        if kind == "folder":
            daemon.db.mkdir()
        else:
            os.mkfifo(daemon.db)
        before = listing(folder)
        assert refused(daemon) == [
            f"Error: database {daemon.db}: it is a {kind}, not a database file; give --db "
            "the path of a file (it is created if missing)"]
        assert listing(folder) == before

    def test_dev_null(self, stories: Stories, daemon: DaemonProcess) -> None:
        """/dev/null as --db: one line; no null.lock or null-journal appears in /dev."""
        beside = [Path("/dev/null" + suffix)
                  for suffix in (".lock", ".heartbeat", "-journal", "-wal", "-shm")]
        if any(os.path.lexists(path) for path in beside):
            pytest.skip("an older pipelined left files beside /dev/null")
        daemon.db = Path("/dev/null")
        assert refused(daemon) == [
            "Error: database /dev/null: it is a character device, not a database file; "
            "give --db the path of a file (it is created if missing)"]
        assert not any(os.path.lexists(path) for path in beside)

    def test_newer_migration_before_the_lock(self, stories: Stories,
                                             daemon: DaemonProcess) -> None:
        """Our database holding a migration this code does not know: refused before the
        lock file is rewritten or the database opened for writing."""
        daemon.start()
        assert daemon.stop() == 0
        conn = apsw.Connection(str(daemon.db))
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_future.sql', 'x', 'now')")
        conn.close()
        before = listing(daemon.db.parent)
        assert refused(daemon, EXIT_NEEDS_A_PERSON) == [  # an upgrade, not a restart, helps
            f"Error: database {daemon.db}: it has migration 9999_future.sql that this "
            "pipelined does not know (written by a newer version); upgrade pipelined"]
        assert listing(daemon.db.parent) == before

    @pytest.mark.parametrize(("suffix", "make", "kind"), [
        (".lock", "symlink", "a symbolic link"),
        (".heartbeat", "symlink", "a symbolic link"),
        (".lock", "fifo", "a FIFO (named pipe)"),
    ])
    def test_lock_and_heartbeat_are_never_written_through(
            self, stories: Stories, daemon: DaemonProcess, folder: Path, tmp_path: Path,
            suffix: str, make: str, kind: str) -> None:
        """A symbolic link or FIFO where the lock or heartbeat goes: refused with one line;
        the file a link points to keeps its bytes, and nothing waits on a FIFO."""
        daemon.db = folder / "pipeline.db"
        beside = folder / f"pipeline.db{suffix}"
        precious = tmp_path / "precious.txt"
        precious.write_text("keep me\n")
        if make == "symlink":
            beside.symlink_to(precious)
        else:
            os.mkfifo(beside)
        before = listing(folder)
        assert refused(daemon) == [
            f"Error: database {daemon.db}: {beside} beside it is {kind}, not a file pipelined "
            "made; move it away"]
        assert precious.read_text() == "keep me\n"
        assert listing(folder) == before


class TestSurvey:
    def test_sees_tables_that_sit_only_in_the_wal(self, folder: Path) -> None:
        """The survey reads the -wal too (where immutable=1 would see an empty file) and
        creates no -shm, takes no lock, checkpoints nothing."""
        db = folder / "app.db"
        copy_mid_write(db, foreign_tables)
        before = listing(folder)
        found = survey(db)
        assert found.tables == ("customers", "invoices")
        assert found.foreign
        assert listing(folder) == before

    def test_a_crashed_daemons_database_is_accepted(self, folder: Path) -> None:
        """A database whose migrations sit only in its -wal (a daemon killed during its
        first start) is pipelined's own: the check before writing accepts it."""
        db = folder / "pipeline.db"
        copy_mid_write(db, pipelined_tables)
        before = listing(folder)
        check_before_writing(db)
        assert survey(db).ours
        assert listing(folder) == before

    def test_another_tools_schema_migrations_is_foreign(self, folder: Path) -> None:
        """A schema_migrations table of another tool (Rails: one `version` column) does not
        make a database pipelined's."""
        db = folder / "rails.db"
        conn = apsw.Connection(str(db))
        conn.execute("CREATE TABLE schema_migrations(version TEXT PRIMARY KEY);"
                     "CREATE TABLE users(id INTEGER PRIMARY KEY)")
        conn.close()
        found = survey(db)
        assert not found.ours
        assert found.tables == ("schema_migrations", "users")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", *args], capture_output=True,
                          text=True, timeout=60, check=False)


class TestRebuild:
    def test_refuses_another_applications_database(self, stories: Stories,
                                                   folder: Path) -> None:
        """rebuild never moves another application's database aside: one line, exit 1,
        and the folder as it was (no <db>.old-<time>, no lock file, no new database)."""
        db = folder / "app.db"
        make_foreign(db)
        before = listing(folder)
        result = cli("rebuild", "--root", str(stories.root), "--db", str(db))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: database {db}: it is another application's database (tables: "
            "customers, invoices, notes); pipelined only uses its own"]
        assert listing(folder) == before

    def test_keeps_an_earlier_old_file_of_the_same_second(self, stories: Stories,
                                                          folder: Path) -> None:
        """Two rebuilds within one second: the second keeps its old database under a new
        name instead of replacing the first one's."""
        db = folder / "pipeline.db"
        stories.write("1_backlog", "1_story_a")
        assert cli("rebuild", "--root", str(stories.root), "--db", str(db)).returncode == 0
        now = calendar.timegm(time.gmtime())
        earlier: dict[Path, bytes] = {}
        for second in range(now - 1, now + 30):  # whichever second the rebuild falls in
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(second))
            path = folder / f"pipeline.db.old-{stamp}"
            path.write_bytes(f"kept at {stamp}\n".encode())
            earlier[path] = path.read_bytes()
        result = cli("rebuild", "--json", "--root", str(stories.root), "--db", str(db))
        assert result.returncode == 0, result.stderr
        assert all(path.read_bytes() == kept for path, kept in earlier.items())
        old = Path(json.loads(result.stdout)["old_db"])
        assert old.name.endswith("-2")
        assert old.read_bytes().startswith(b"SQLite format 3\x00")


class TestBackup:
    @pytest.fixture
    def db(self, stories: Stories, folder: Path) -> Path:
        path = folder / "pipeline.db"
        assert cli("rebuild", "--root", str(stories.root), "--db", str(path)).returncode == 0
        return path

    def test_refuses_another_applications_database(self, folder: Path,
                                                   tmp_path: Path) -> None:
        """backup copies pipelined's database only: a foreign source is one line naming
        it, no copy is made, and no -wal or -shm appears beside the foreign file."""
        source = folder / "app.db"
        make_foreign(source, wal=True)
        target = tmp_path / "copy.db"
        before = listing(folder)
        result = cli("backup", str(target), "--db", str(source))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: database {source}: not a pipelined database (it holds another "
            "application's tables: customers, invoices, notes)"]
        assert not target.exists()
        assert listing(folder) == before

    def test_never_writes_through_a_dangling_symlink(self, db: Path, tmp_path: Path) -> None:
        """A target that is a symbolic link to a missing file is refused: the backup is
        not written to wherever the link points."""
        elsewhere = tmp_path / "elsewhere.db"
        target = tmp_path / "backup.db"
        target.symlink_to(elsewhere)
        result = cli("backup", str(target), "--db", str(db))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: database {target}: already exists; choose a new file name"]
        assert not os.path.lexists(elsewhere)


class TestReadCommands:
    def test_doctor_on_a_foreign_wal_database(self, stories: Stories, folder: Path) -> None:
        """doctor on another application's WAL database: "not a pipelined database" in one
        line, and no -wal or -shm file is created beside it."""
        source = folder / "app.db"
        make_foreign(source, wal=True)
        before = listing(folder)
        result = cli("doctor", "--root", str(stories.root), "--db", str(source))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: database {source}: not a pipelined database (it holds another "
            "application's tables: customers, invoices, notes)"]
        assert listing(folder) == before

    @pytest.mark.parametrize("command", [("ls",), ("status",), ("show", "1"), ("log",)])
    def test_read_commands_leave_a_foreign_wal_database_alone(
            self, stories: Stories, folder: Path, command: tuple[str, ...]) -> None:
        """Every read command on another application's WAL database: one line naming it,
        exit 1, and no -wal or -shm file created beside it."""
        source = folder / "app.db"
        make_foreign(source, wal=True)
        before = listing(folder)
        result = cli(*command, "--root", str(stories.root), "--db", str(source))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"Error: database {source}: not a pipelined database (it holds another "
            "application's tables: customers, invoices, notes)"]
        assert listing(folder) == before


def test_header_read_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """The header is read non-blocking and checked on the descriptor: a FIFO renamed
    over the database after its stat is refused at once, never waited on."""
    fifo = tmp_path / "p.db"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def read() -> None:
        try:
            _read_header(fifo)
        except DatabaseError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    try:
        assert outcome and "a FIFO (named pipe), not a database file" in outcome[0]
    finally:
        with contextlib.suppress(OSError):  # frees a reader stuck in open()
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("wal", ["frames", "empty"])
def test_check_leaves_a_crashed_daemons_wal_as_it_was(tmp_path: Path, wal: str) -> None:
    """The start-up check of pipelined's own database left by a crash (its -wal
    holding committed frames, or just truncated by a checkpoint) changes nothing
    beside it: its read neither checkpoints nor deletes that -wal, though its
    connection is the last one (SQLite deletes an empty -wal on the last close)."""
    folder = tmp_path / "state"
    db = folder / "p.db"
    crash = ("import os, sys\n"
             "from pathlib import Path\n"
             "from pipelined.store.connection import open_writer\n"
             "from pipelined.store.migrations import apply_migrations\n"
             "db = Path(sys.argv[1])\n"
             "conn = open_writer(db)\n"
             "apply_migrations(conn, db)\n"
             "if sys.argv[2] == 'empty':\n"
             "    conn.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()\n"
             "os._exit(0)  # no close: the -wal stays, as after kill -9\n")
    subprocess.run([sys.executable, "-c", crash, str(db), wal], check=True,
                   timeout=DEADLINE_S)
    assert (db.with_name("p.db-wal").stat().st_size > 0) == (wal == "frames")
    before = listing(folder)
    check_before_writing(db)
    assert listing(folder) == before
