"""The startup catch-up (a first import, or many changes made while stopped) is
committed in chunks, each a pycrdt transaction with its rows and signatures; a
crash between chunks costs only the chunks not yet committed. Also the bounded
read every story file goes through, and the writer's check waiting for the
stat pass."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import apsw
import pytest
from conftest import (
    STAGES,
    DaemonProcess,
    Stories,
    folder_matches_db,
    observe,
    state_matches_rows,
    stopped_clean,
    wait_until,
)

from pipelined.config import resolve
from pipelined.entry import main as entry_main
from pipelined.errors import EXIT_NEEDS_A_PERSON
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.service import Pipeline
from pipelined.startup import STARTUP_CHUNK
from pipelined.store.connection import open_writer
from pipelined.store.integrity import unmark
from pipelined.store.search import BUILDING_NOTE
from pipelined.store.writer import Writer
from pipelined.sync import read_at_most


def write_many(stories: Stories, count: int) -> None:
    for n in range(count):
        stories.write(STAGES[n % 3], f"{n + 1}_story_bulk", name=f"bulk {n}", retry_count=n % 4)


def count_rows(daemon: DaemonProcess) -> int:
    try:
        return int(daemon.query("SELECT count(*) FROM pipeline_items")[0][0])
    except apsw.Error:  # no database or no table yet: the daemon is only starting
        return 0


def search_ready(daemon: DaemonProcess) -> bool:
    """The search index's three triggers are there and no bulk build is owed."""
    triggers = daemon.query("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
                            "AND name LIKE 'pipeline_search%'")
    owed = daemon.query("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'")
    return triggers == [(3,)] and not owed


def test_a_search_while_the_index_is_owed_says_so(
        stories: Stories, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between a first import's READY and its search index (or after a crash in
    between), `search` and the service's answer carry a note; once built, neither."""
    stories.write("1_backlog", "1_story_bulk", name="bulk one")
    db = tmp_path / "p.db"
    config = resolve({"root": stories.root, "db": db}, env={})
    rebuild(config)
    configure_logging()
    args = ["search", "bulk", "--db", str(db), "--root", str(stories.root)]

    def searched() -> tuple[str, str]:
        monkeypatch.setattr("sys.argv", ["pipelined", *args])
        with pytest.raises(SystemExit) as exited:
            entry_main()
        assert exited.value.code in (0, None)
        return capsys.readouterr()

    out, err = searched()
    assert "1_story_bulk" in out and BUILDING_NOTE not in err
    assert "note" not in Pipeline(config).search("bulk")
    conn = open_writer(db)
    conn.execute("INSERT INTO daemon_meta(key, value) VALUES ('search_suspended', '[]')")
    conn.close()
    out, err = searched()
    assert "1_story_bulk" in out and f"note: {BUILDING_NOTE}" in err.splitlines()
    assert Pipeline(config).search("bulk")["note"] == BUILDING_NOTE


class TestChunkedImport:
    def test_first_import_commits_one_update_per_chunk(self, stories: Stories,
                                                       daemon: DaemonProcess) -> None:
        """Two chunks of stories and 50 more: every row in at READY, three pycrdt
        updates, and a restart loads the same state without reading any file."""
        total = 2 * STARTUP_CHUNK + 50  # the last chunk is small: still one import
        write_many(stories, total)
        daemon.start()
        assert folder_matches_db(stories, daemon)
        updates = daemon.query("SELECT kind FROM crdt_updates ORDER BY seq")
        assert [kind for (kind,) in updates] == ["update"] * 3
        startup = daemon.wait_log("daemon.startup")
        assert (startup["files_reread"], startup["created"]) == (total, total)
        # Chunks 2 and 3 by the worker process, on a machine with a second CPU.
        assert startup["parsed_ahead"] == (2 if len(os.sched_getaffinity(0)) > 1 else 0)
        # The search index is built in bulk right after READY, and works row by row again.
        wait_until(lambda: search_ready(daemon), what="the search index built")
        # Then, the writer idle, the freed heap goes back to the kernel.
        trimmed = daemon.wait_log("daemon.heap_trimmed")
        assert isinstance(trimmed["rss_mib"], int) and isinstance(trimmed["rss_mib_before"], int)
        assert "startup.search_index_building" in [e.get("event") for e in daemon.log_events()]
        assert daemon.cli("search", "bulk", "--json").returncode == 0
        hits = json.loads(daemon.cli("search", f"{total}_story_bulk", "--json").stdout)
        assert [h["id"] for h in hits] == [f"{total}_story_bulk"]
        # Thousands of per-story lines go to debug (the small last chunk's too, as
        # one import); a single new story is info.
        levels = {e["level"] for e in daemon.log_events() if e.get("event") == "story.created"}
        assert levels == {"debug"}
        stories.write("1_backlog", f"{total + 1}_story_single", name="single")
        daemon.wait_row(f"{total + 1}_story_single")
        hits = json.loads(daemon.cli("search", "single", "--json").stdout)
        assert [h["id"] for h in hits] == [f"{total + 1}_story_single"]  # the trigger again
        single = [e for e in daemon.log_events() if e.get("event") == "story.created"
                  and e.get("id") == f"{total + 1}_story_single"]
        assert [e["level"] for e in single] == ["info"]
        assert daemon.stop() == 0
        total += 1

        daemon.start()
        restart = daemon.wait_log("daemon.startup", count=2)
        assert (restart["files_reread"], restart["stories_loaded"]) == (0, total)
        assert state_matches_rows(daemon)
        assert daemon.stop() == 0

    @pytest.mark.slow  # over about 6 s of wall time: the slow pass
    def test_kill_between_chunks_rereads_only_the_rest(self, stories: Stories,
                                                       daemon: DaemonProcess) -> None:
        """kill -9 once the first chunk is committed: the next start reads only the
        files of the chunks that were not, and ends equal to the folders."""
        total = 6 * STARTUP_CHUNK
        write_many(stories, total)
        daemon.spawn()
        wait_until(lambda: count_rows(daemon) >= STARTUP_CHUNK, what="the first chunk")
        daemon.stop(signal.SIGKILL)
        committed = count_rows(daemon)
        signed = int(daemon.query("SELECT count(*) FROM file_signatures")[0][0])
        assert STARTUP_CHUNK <= committed < total  # the kill landed between chunks
        assert signed == committed  # rows and signatures of a chunk land together
        assert state_matches_rows(daemon)  # and its pycrdt update with them
        created = {i: r["created_at"] for i, r in daemon.rows().items()}

        # The kill left the search index suspended, and the note saying so; a search
        # meanwhile says so too.
        assert not search_ready(daemon)
        assert daemon.query("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'")
        searched = daemon.cli("search", "bulk")
        assert searched.returncode == 0 and BUILDING_NOTE in searched.stderr

        daemon.start()
        startup = daemon.wait_log("daemon.startup")  # the killed run logged none
        assert startup["files_reread"] == total - committed
        assert startup["created"] == total - committed
        assert folder_matches_db(stories, daemon)
        # built whole once the resumed import is in
        wait_until(lambda: search_ready(daemon), what="the search index built")
        assert daemon.query("SELECT count(*) FROM pipeline_search WHERE pipeline_search "
                            "MATCH 'bulk'") == [(total,)]
        assert state_matches_rows(daemon)
        rows = daemon.rows()
        assert all(rows[i]["created_at"] == at for i, at in created.items())
        assert daemon.stop() == 0

    def test_writer_failing_its_check_mid_catch_up_stops_with_one_line(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """The writer's quick_check fails (a damaged index the stat pass never reads)
        while a catch-up of several chunks fills its queue of one: the daemon still
        stops at once with the one-line error instead of hanging on a full queue."""
        write_many(stories, 30)
        daemon.start()
        assert daemon.stop() == 0
        forget_the_clean_stop(daemon.db)  # as after a crash: the check comes first
        damage_index(daemon.db, "story_history_story")
        for n in range(100, 100 + 3 * STARTUP_CHUNK):
            stories.write("1_backlog", f"{n}_story_more", name=f"more {n}")
        proc = daemon.spawn(env={"PIPELINED_WRITER_QUEUE": "1"})
        assert proc.wait(30) == EXIT_NEEDS_A_PERSON  # damaged: no restart helps
        last = daemon.log_tail(1)
        assert last.startswith(f"Error: database {daemon.db}: quick_check found")
        assert "pipelined rebuild" in last

    def test_damage_after_a_clean_stop_stops_with_one_line(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """After a clean stop the check runs beside the catch-up's writes: damage it
        finds (or a write meets first) still stops the daemon with one line naming
        rebuild, at this start and the next."""
        write_many(stories, 30)
        daemon.start()
        assert daemon.stop() == 0
        damage_index(daemon.db, "story_history_story")
        for n in range(100, 100 + 3 * STARTUP_CHUNK):
            stories.write("1_backlog", f"{n}_story_more", name=f"more {n}")
        assert stopped_clean(daemon.db)
        for _start in range(2):  # and again: the damage is found at every start
            proc = daemon.spawn(env={"PIPELINED_WRITER_QUEUE": "1"})
            assert proc.wait(30) == EXIT_NEEDS_A_PERSON
            last = daemon.log_tail(1)
            assert last.startswith(f"Error: database {daemon.db}: ")
            assert "pipelined rebuild" in last
            assert not stopped_clean(daemon.db)  # the next start checks first

    @pytest.mark.slow  # over about 6 s of wall time: the slow pass
    def test_second_signal_during_a_first_import_stops_cleanly(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """Two SIGTERMs once the first chunk is in: the writer is abandoned while the
        catch-up still has chunks to queue; the daemon exits 0 without hanging, and
        the next start reads only the files that were not committed."""
        # Twelve chunks: the main thread sees a signal at its next tick, and the import
        # (parsed ahead since) must still be going on when the second one comes.
        total = 12 * STARTUP_CHUNK
        write_many(stories, total)
        proc = daemon.spawn(env={"PIPELINED_WRITER_QUEUE": "1"})
        wait_until(lambda: count_rows(daemon) >= STARTUP_CHUNK, what="the first chunk")
        proc.send_signal(signal.SIGTERM)
        daemon.wait_log("daemon.stopping")
        assert daemon.stop(signal.SIGTERM) == 0
        assert [e for e in daemon.log_events() if e.get("event") == "daemon.startup_stopped"]
        committed = count_rows(daemon)
        assert committed < total

        daemon.start()
        startup = daemon.wait_log("daemon.startup")
        assert startup["files_reread"] == total - committed
        assert folder_matches_db(stories, daemon)
        assert daemon.stop() == 0


def forget_the_clean_stop(db: Path) -> None:
    assert stopped_clean(db)
    conn = apsw.Connection(str(db))
    unmark(conn)
    conn.close()


def damage_index(db: Path, index: str) -> None:
    """Overwrite the first bytes of one index's root page, as a bad sector would."""
    conn = apsw.Connection(str(db))
    root_page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                             (index,)).fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as handle:
        handle.seek((root_page - 1) * page_size)
        handle.write(b"\xff" * 16)


def read_path(path: str | Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_at_most(fd, limit)
    finally:
        os.close(fd)


class TestReadAtMost:
    def test_small_file_is_read_whole(self, tmp_path: Path) -> None:
        """A file under the limit comes back whole."""
        path = tmp_path / "1_story_a.md"
        path.write_bytes(b"x" * 5000)
        assert read_path(path, 1_000_000) == b"x" * 5000

    def test_empty_file(self, tmp_path: Path) -> None:
        """An empty file reads as no bytes."""
        path = tmp_path / "1_story_a.md"
        path.write_bytes(b"")
        assert read_path(path, 100) == b""

    def test_large_file_is_cut_at_the_limit(self, tmp_path: Path) -> None:
        """Past the limit only `limit` bytes are read, over several chunks."""
        path = tmp_path / "1_story_a.md"
        data = bytes(range(256)) * 1000  # 256,000 bytes
        path.write_bytes(data)
        assert read_path(path, 200_001) == data[:200_001]
        assert read_path(path, len(data)) == data
        assert read_path(path, len(data) + 1) == data

    def test_file_larger_than_its_stat_size(self) -> None:
        """A file that grew since the stat (here /proc/version, whose stat size is 0)
        is still read past that size, in chunks, and still cut at the limit."""
        whole = Path("/proc/version").read_bytes()
        assert len(whole) > 10
        assert read_path("/proc/version", 100_000) == whole
        assert read_path("/proc/version", 10) == whole[:10]


class TestWriterBegin:
    def test_integrity_check_waits_for_begin(self, tmp_path: Path) -> None:
        """The writer opens its connection at once, but runs its check (quick_check,
        which reads the whole file) only once told: after the startup stat pass."""
        db = tmp_path / "w.db"
        checked = threading.Event()
        writer = Writer(lambda: open_writer(db), 4, check=lambda _conn: checked.set())
        writer.start()
        try:
            wait_until(db.exists, what="the writer's connection")
            assert observe(lambda: not checked.is_set(), 0.3)
            writer.begin()
            wait_until(checked.is_set, what="the check after begin()")
        finally:
            writer.close(10)
        assert not writer.is_alive()

    def test_close_without_begin_still_stops(self, tmp_path: Path) -> None:
        """A startup that fails before the stat pass never calls begin(): close() does."""
        writer = Writer(lambda: open_writer(tmp_path / "w.db"), 4)
        writer.start()
        writer.close(10)
        assert not writer.is_alive()


class TestGivingTheHeapBack:
    def test_the_rss_is_read_or_said_unknown(self, tmp_path: Path) -> None:
        """The RSS logged around the heap trim: this process's, or None when /proc
        cannot tell (missing, or not what statm holds), never an error."""
        from pipelined.apply import _rss_mib

        rss = _rss_mib()
        assert rss is not None and rss > 10
        assert _rss_mib(str(tmp_path / "missing")) is None
        (tmp_path / "statm").write_text("garbage\n")
        assert _rss_mib(str(tmp_path / "statm")) is None
