"""Story history (migration 0003): `log`, `events --follow`, `stats`, the upgrade."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import apsw
import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, wait_until

from pipelined.history import finished_per_week, normalize_since, percentile, stage_durations
from pipelined.store.migrations import apply_migrations, known_migrations

ENTRY_KEYS = {"seq", "at", "id", "kind", "from_stage", "to_stage", "fields", "changes"}


def log_json(daemon: DaemonProcess, *args: str) -> list[dict[str, Any]]:
    return json.loads(daemon.cli("log", "--json", *args, check=True).stdout)  # type: ignore[no-any-return]


def script_changes(stories: Stories, daemon: DaemonProcess) -> None:
    """Create, edit, move, delete one story; each step settled before the next."""
    stories.write("1_backlog", "5_story_x", name="First")
    daemon.wait_row("5_story_x")
    stories.write("1_backlog", "5_story_x", name="Second", agent="coder-1")
    daemon.wait_row("5_story_x", lambda r: r["name"] == "Second")
    stories.move("5_story_x", "1_backlog", "2_current")
    daemon.wait_row("5_story_x", lambda r: r["stage"] == "2_current")
    stories.path("2_current", "5_story_x").unlink()
    daemon.wait_gone("5_story_x")


EXPECTED = [
    ("created", None, "1_backlog", None),
    ("updated", "1_backlog", "1_backlog", ["name", "agent"]),
    ("moved", "1_backlog", "2_current", None),
    ("deleted", "2_current", None, None),
]


def shape(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["kind"], e["from_stage"], e["to_stage"], e["fields"]) for e in entries]


class LineReader:
    """Lines of a subprocess stream, read by a thread, taken with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Once the process has exited: the pump has seen the end; close the pipe."""
        self.thread.join(DEADLINE_S)
        self.stream.close()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def take(self, count: int, timeout: float = DEADLINE_S) -> list[str]:
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"got {len(got)} of {count} lines within {timeout}s: {got}")
            try:
                got.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue
        return got


def follow(daemon: DaemonProcess,
           *args: str) -> tuple[subprocess.Popen[str], LineReader, LineReader]:
    """`events --follow --json` as a subprocess, once it has read where it starts."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelined", "events", "--follow", "--json", *args,
         "--root", str(daemon.root), "--db", str(daemon.db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    errors = LineReader(proc.stderr)
    started = errors.take(1)[0]
    assert started.startswith("events after seq "), started
    return proc, LineReader(proc.stdout), errors


class TestLog:
    def test_log_records_create_edit_move_delete(self, stories: Stories,
                                                 daemon: DaemonProcess) -> None:
        """`log --json`: kinds, stages, changed fields, in commit order; by id or number."""
        stories.write("1_backlog", "1_story_other", name="Other")
        daemon.start()
        script_changes(stories, daemon)
        entries = log_json(daemon, "5_story_x")
        assert all(set(e) == ENTRY_KEYS for e in entries)
        assert shape(entries) == EXPECTED
        assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
        assert all(e["at"].endswith("Z") and e["id"] == "5_story_x" for e in entries)
        assert log_json(daemon, "5") == entries  # a bare number finds the deleted story
        everything = log_json(daemon)
        assert [e["id"] for e in everything] == ["1_story_other"] + ["5_story_x"] * 4
        assert log_json(daemon, "--limit", "2") == entries[-2:]
        assert log_json(daemon, "--since", "2999-01-01") == []
        assert log_json(daemon, "--since", entries[2]["at"], "5") == entries[2:]
        assert entries[1]["changes"] == {"name": ["First", "Second"], "agent": [None, "coder-1"]}
        assert [e["changes"] for e in entries if e["kind"] != "updated"] == [None] * 3
        text = daemon.cli("log", "5", check=True).stdout.splitlines()
        assert text[0].split() == ["SEQ", "WHEN", "ID", "WHAT"]
        assert "moved 1_backlog -> 2_current" in text[3]
        assert "updated name First -> Second, agent (none) -> coder-1" in text[2]
        bad = daemon.cli("log", "--since", "yesterday")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

    def test_move_resets_retry_count_without_an_update(self, stories: Stories,
                                                       daemon: DaemonProcess) -> None:
        """A move's reset of retry_count is part of the move; a later edit is an update."""
        stories.write("2_current", "7_bug_r", name="R", retry_count=3)
        daemon.start()
        stories.move("7_bug_r", "2_current", "4_merge")
        daemon.wait_row("7_bug_r", lambda r: r["stage"] == "4_merge" and r["retry_count"] == 0)
        stories.write("4_merge", "7_bug_r", name="R", retry_count=1, blocked=True)
        daemon.wait_row("7_bug_r", lambda r: r["blocked"] == 1)
        entries = log_json(daemon, "7")
        assert shape(entries) == [
            ("created", None, "2_current", None),
            ("moved", "2_current", "4_merge", None),
            ("updated", "4_merge", "4_merge", ["retry_count", "blocked"]),
        ]
        assert entries[2]["changes"] == {"retry_count": [0, 1], "blocked": [False, True]}

    def test_a_copy_in_another_stage_is_a_conflict_not_a_move(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """`cp` into another stage: the newer copy wins (the contract), recorded as
        `conflict`, retry_count kept; removing the winning copy falls back, recorded as
        `resolved`; removing the original instead completes a move in two steps (a
        `moved` row). A copy alone is no move, and only moves count in `stats`."""
        stories.write("2_current", "8_story_c", name="C", retry_count=2)
        stories.write("2_current", "9_story_d", name="D", retry_count=1)
        daemon.start()
        source = stories.path("2_current", "8_story_c")
        copy = stories.path("4_merge", "8_story_c")
        copy.write_bytes(source.read_bytes())  # cp: a newer file in the last stage
        daemon.wait_row("8_story_c", lambda r: r["stage"] == "4_merge")
        assert daemon.row("8_story_c")["retry_count"] == 2  # type: ignore[index]
        copy.unlink()  # rm the winning copy: back to the one in 2_current
        daemon.wait_row("8_story_c", lambda r: r["stage"] == "2_current")
        copy.write_bytes(source.read_bytes())  # cp again, then rm the older copy
        daemon.wait_row("8_story_c", lambda r: r["stage"] == "4_merge")
        source.unlink()
        wait_until(lambda: len(log_json(daemon, "8")) == 5, what="the two-step move")
        stories.move("9_story_d", "2_current", "4_merge")  # a real move
        daemon.wait_row("9_story_d", lambda r: r["stage"] == "4_merge")
        assert shape(log_json(daemon, "8")) == [
            ("created", None, "2_current", None),
            ("conflict", "2_current", "4_merge", None),
            ("resolved", "4_merge", "2_current", None),
            ("conflict", "2_current", "4_merge", None),
            ("moved", "2_current", "4_merge", None),  # the original removed
        ]
        assert shape(log_json(daemon, "9"))[1] == ("moved", "2_current", "4_merge", None)
        assert daemon.row("9_story_d")["retry_count"] == 0  # type: ignore[index]
        text = daemon.cli("log", "8", check=True).stdout.splitlines()  # a header, then rows
        assert "copied into 4_merge, which wins the conflict" in text[2]
        assert "conflict over: back to the copy in 2_current" in text[3]
        stats = json.loads(daemon.cli("stats", "--json", check=True).stdout)
        # 9's move and 8's two-step move; the copies alone finished nothing.
        assert sum(stats["finished_per_week"].values()) == 2

    def test_a_move_in_two_steps_and_a_move_over_a_stale_copy_are_moves(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """`cp` into another stage, later `rm` of the original: the copy's win is a
        `conflict`, the original's removal completes a `moved` (from where it was). And
        `mv -f` of the winning copy over an older copy in another stage is a `moved`
        with the retry reset, not a fallback to that copy (`resolved`)."""
        stories.write("1_backlog", "20_story_two_steps", name="Two steps")
        stories.write("2_current", "21_story_over", name="Over", retry_count=3)
        daemon.start()
        source = stories.path("1_backlog", "20_story_two_steps")
        stories.path("2_current", "20_story_two_steps").write_bytes(source.read_bytes())
        daemon.wait_row("20_story_two_steps", lambda r: r["stage"] == "2_current")
        source.unlink()
        wait_until(lambda: len(log_json(daemon, "20")) == 3, what="the completed move")
        assert shape(log_json(daemon, "20")) == [
            ("created", None, "1_backlog", None),
            ("conflict", "1_backlog", "2_current", None),
            ("moved", "1_backlog", "2_current", None),
        ]
        # An older copy of 21 in 4_merge (the winner stays in 2_current), then the
        # winner is moved over it: a real move.
        stale = stories.path("4_merge", "21_story_over")
        stale.write_text(stories.path("2_current", "21_story_over").read_text())
        os.utime(stale, ns=(1_000_000_000, 1_000_000_000))
        wait_until(lambda: len(daemon.query(
            "SELECT 1 FROM file_signatures WHERE story_id = '21_story_over'")) == 2,
                   what="the stale copy seen")
        stories.path("2_current", "21_story_over").rename(stale)
        daemon.wait_row("21_story_over", lambda r: r["stage"] == "4_merge")
        assert shape(log_json(daemon, "21"))[1:] == [("moved", "2_current", "4_merge", None)]
        assert daemon.row("21_story_over")["retry_count"] == 0  # type: ignore[index]

    def test_a_retry_count_of_zero_with_a_fallback_is_recorded(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """The copy says retry_count 5, then goes: the story falls back to the original
        (retry_count 0). A fallback resets nothing, so 5 -> 0 is an `updated` row."""
        stories.write("1_backlog", "22_story_r", name="R", retry_count=0)
        daemon.start()
        stories.write("2_current", "22_story_r", name="R", retry_count=5)
        daemon.wait_row("22_story_r", lambda r: r["retry_count"] == 5)
        stories.path("2_current", "22_story_r").unlink()
        daemon.wait_row("22_story_r", lambda r: r["stage"] == "1_backlog")
        entries = log_json(daemon, "22")
        assert shape(entries)[-1] == ("updated", "1_backlog", "1_backlog", ["retry_count"])
        assert entries[-1]["changes"] == {"retry_count": [5, 0]}
        assert [e["kind"] for e in entries][:3] == ["created", "conflict", "updated"]

    def test_history_survives_a_restart_and_changes_while_stopped(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """Changes made while the daemon was stopped are recorded at the next start."""
        stories.write("1_backlog", "3_story_s", name="S")
        daemon.start()
        daemon.wait_row("3_story_s")
        assert daemon.stop() == 0
        stories.move("3_story_s", "1_backlog", "4_merge")
        daemon.start()
        daemon.wait_row("3_story_s", lambda r: r["stage"] == "4_merge")
        assert [e["kind"] for e in log_json(daemon, "3")] == ["created", "moved"]


class TestEvents:
    def test_follow_receives_create_edit_move_delete_in_order(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """A follower started before the changes gets each one, in order, then stops on SIGTERM."""
        stories.write("1_backlog", "1_story_before", name="Before")
        daemon.start()
        daemon.wait_row("1_story_before")
        proc, reader, errors = follow(daemon)  # from now: the earlier story is not sent
        try:
            script_changes(stories, daemon)
            lines = [json.loads(line) for line in reader.take(4)]
            assert shape(lines) == EXPECTED
            assert all(set(e) == ENTRY_KEYS and e["id"] == "5_story_x" for e in lines)
            assert lines == log_json(daemon, "5_story_x")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(DEADLINE_S) == 0
        finally:
            proc.kill()
            proc.wait()
            reader.close()
            errors.close()

    def test_since_resumes_and_sigint_stops(self, stories: Stories,
                                            daemon: DaemonProcess) -> None:
        """`--since N` sends only what comes after N; without --follow it prints and exits."""
        daemon.start()
        script_changes(stories, daemon)
        entries = log_json(daemon)
        resume = entries[1]["seq"]
        once = daemon.cli("events", "--json", "--since", str(resume), check=True)
        assert [json.loads(x) for x in once.stdout.splitlines()] == entries[2:]
        assert daemon.cli("events", "--json", check=True).stdout == ""  # from now: nothing
        proc, reader, errors = follow(daemon, "--since", "0")
        try:
            assert [json.loads(x) for x in reader.take(4)] == entries
            stories.write("2_current", "6_story_y", name="Y")
            assert json.loads(reader.take(1)[0])["id"] == "6_story_y"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(DEADLINE_S) == 0
            assert errors.lines.empty()  # no traceback, no other noise
        finally:
            proc.kill()
            proc.wait()
            reader.close()
            errors.close()

    def test_closed_stdout_ends_the_follower(self, stories: Stories,
                                             daemon: DaemonProcess) -> None:
        """A follower whose reader went away (`| head -1`) exits 0 by itself."""
        daemon.start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelined", "events", "--follow", "--root",
             str(daemon.root), "--db", str(daemon.db)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stderr is not None and proc.stdout is not None
            assert proc.stderr.readline().startswith(b"events after seq")
            proc.stdout.close()
            assert proc.wait(DEADLINE_S) == 0
            assert b"Traceback" not in proc.stderr.read()
        finally:
            proc.kill()
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def history_db(path: Path, rows: list[tuple[str, str, str, str | None, str | None]]) -> None:
    """A migrated database with a scripted history (at, id, kind, from, to) and rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    apply_migrations(conn, path)
    with conn:
        for at, story_id, kind, from_stage, to_stage in rows:
            conn.execute("INSERT INTO story_history(at, story_id, kind, from_stage, to_stage) "
                         "VALUES (?, ?, ?, ?, ?)", (at, story_id, kind, from_stage, to_stage))
        conn.execute("INSERT INTO pipeline_items(id, stage) VALUES ('1_a', '4_merge'), "
                     "('2_b', '4_merge'), ('3_c', '2_current')")
        conn.execute("DELETE FROM story_history WHERE seq > ?", (len(rows),))  # trigger rows
    conn.close()


class TestStats:
    def test_stats_json_on_a_scripted_history(self, daemon: DaemonProcess) -> None:
        """Counts, median/p90 of completed stays, finished stories per ISO week."""
        history_db(daemon.db, [
            ("2026-11-23T00:00:00.000Z", "1_a", "created", None, "1_backlog"),
            ("2026-11-23T00:00:10.000Z", "2_b", "created", None, "1_backlog"),
            ("2026-11-23T00:01:00.000Z", "1_a", "moved", "1_backlog", "2_current"),
            ("2026-11-23T00:03:10.000Z", "2_b", "moved", "1_backlog", "2_current"),
            ("2026-11-23T01:01:00.000Z", "1_a", "moved", "2_current", "4_merge"),
            ("2026-11-30T00:03:10.000Z", "2_b", "moved", "2_current", "4_merge"),
            ("2026-11-30T00:00:00.000Z", "3_c", "created", None, "2_current"),
            ("2026-11-30T00:00:00.000Z", "4_d", "created", None, "1_backlog"),
            ("2026-11-30T00:00:30.000Z", "4_d", "deleted", "1_backlog", None),
        ])
        result = json.loads(daemon.cli("stats", "--json", check=True).stdout)
        assert result["stages"] == {"1_backlog": 0, "2_current": 1, "4_merge": 2}
        assert result["finish_stage"] == "4_merge"
        assert result["finished_per_week"] == {"2026-W48": 1, "2026-W49": 1}
        backlog = result["time_in_stage"]["1_backlog"]
        assert backlog == {"count": 3, "median_s": 60.0, "p90_s": 156.0}  # 30, 60, 180
        current = result["time_in_stage"]["2_current"]
        assert current["count"] == 2 and current["median_s"] == (3600 + 7 * 86400) / 2
        assert set(result["time_in_stage"]) == {"1_backlog", "2_current"}
        text = daemon.cli("stats", check=True).stdout
        assert "2026-W49" in text and "1.0m" in text

    def test_helpers(self) -> None:
        """Percentiles interpolate; dates normalize to the `at` text form."""
        assert percentile([], 0.5) is None
        assert percentile([5.0], 0.9) == 5.0
        assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
        assert normalize_since("2026-11-26") == "2026-11-26T00:00:00.000Z"
        assert normalize_since("2026-11-26T10:00:00+02:00") == "2026-11-26T08:00:00.000Z"
        entries = [{"seq": 1, "at": "2026-01-01T00:00:00Z", "id": "1_a", "kind": "created",
                    "to_stage": "s"},
                   {"seq": 2, "at": "2026-01-01T00:00:05Z", "id": "1_a", "kind": "updated",
                    "to_stage": "s"}]
        assert stage_durations(entries) == {}  # a stay not ended yet is not counted
        assert finished_per_week(entries, "s") == {}  # created, not moved, into it


class TestMigration:
    def test_database_with_0001_and_0002_upgrades(self, stories: Stories,
                                                  daemon: DaemonProcess) -> None:
        """A database from before the history gains it at start; old stories are kept."""
        daemon.db.parent.mkdir(parents=True)
        old = [m for m in known_migrations() if m.name < "0003"]
        assert [m.name for m in old] == ["0001_initial.sql", "0002_crdt_epochs.sql"]
        conn = apsw.Connection(str(daemon.db))
        apply_migrations(conn, daemon.db, old)
        conn.close()
        stories.write("1_backlog", "1_story_old", name="Old")
        daemon.start()  # migrates to 0003 before its stat pass finds the story
        daemon.wait_row("1_story_old")
        stories.write("1_backlog", "1_story_old", name="Renamed")
        daemon.wait_row("1_story_old", lambda r: r["name"] == "Renamed")
        names = [r[0] for r in daemon.query("SELECT name FROM schema_migrations ORDER BY name")]
        assert "0003_history.sql" in names
        assert shape(log_json(daemon, "1")) == [
            ("created", None, "1_backlog", None),
            ("updated", "1_backlog", "1_backlog", ["name"]),
        ]

    def test_rows_from_before_the_upgrade_then_change(self, tmp_path: Path) -> None:
        """Rows written before 0003 have no history; their next change is recorded."""
        path = tmp_path / "old.db"
        conn = apsw.Connection(str(path))
        old = [m for m in known_migrations() if m.name < "0003"]
        apply_migrations(conn, path, old)
        conn.execute("INSERT INTO pipeline_items(id, stage, updated_at) "
                     "VALUES ('1_a', '1_backlog', 't0')")
        assert "0003_history.sql" in apply_migrations(conn, path)
        assert conn.execute("SELECT count(*) FROM story_history").fetchone()[0] == 0
        conn.execute("UPDATE pipeline_items SET stage = '2_current', updated_at = 't1'")
        conn.execute("DELETE FROM pipeline_items")
        rows = conn.execute("SELECT at, kind, from_stage, to_stage FROM story_history "
                            "ORDER BY seq").fetchall()
        conn.close()
        assert rows[0] == ("t1", "moved", "1_backlog", "2_current")
        assert rows[1][1:] == ("deleted", "2_current", None)

    def test_log_on_a_database_without_history(self, tmp_path: Path) -> None:
        """A read command on a not-yet-upgraded database: one line, exit 1."""
        path = tmp_path / "old.db"
        conn = apsw.Connection(str(path))
        apply_migrations(conn, path, [m for m in known_migrations() if m.name < "0003"])
        conn.close()
        result = subprocess.run([sys.executable, "-m", "pipelined", "log", "--db", str(path),
                                 "--root", str(tmp_path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith("Error: database") and "history" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
