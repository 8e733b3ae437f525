"""sd_notify: the Notifier, the health probes, and the real daemon talking to a
fake `NOTIFY_SOCKET`.

The fake socket is a datagram socket the test binds with SO_PASSCRED, so the
kernel attaches the sender's pid to every message: each assertion names the
message, its order and who sent it. The writer is wedged for real, by a write
transaction the test holds on the database.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, wait_until

from pipelined.health import (
    Liveness,
    ProgressProbe,
    StatusReporter,
    WatchdogPinger,
    status_line,
)
from pipelined.notify import Notifier, monotonic_usec, watchdog_usec

WATCHDOG_USEC = 200_000  # pings due every 0.1 s; a part is stalled after 1 s without progress


@dataclass(frozen=True)
class Message:
    """One datagram: its text, the sender's pid (SCM_CREDENTIALS), when it came."""

    text: str
    pid: int | None
    at: float

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def has(self, line: str) -> bool:
        return line in self.lines

    def value(self, key: str) -> str | None:
        for line in self.lines:
            if line.startswith(f"{key}="):
                return line.split("=", 1)[1]
        return None


class NotifySocket:
    """A fake `$NOTIFY_SOCKET`: receives datagrams with the sender's credentials."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address if not address.startswith("@") else "\0" + address[1:])
        self.messages: list[Message] = []

    def receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
        except (TimeoutError, BlockingIOError):
            return None
        pid = None
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        message = Message(data.decode("utf-8"), pid, time.monotonic())
        self.messages.append(message)
        return message

    def wait_for(self, match: Callable[[Message], bool], what: str,
                 timeout: float = DEADLINE_S, alive: Callable[[], bool] = lambda: True,
                 start: int = 0) -> Message:
        """The first message from index `start` on that matches; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for message in self.messages[seen:]:
                if match(message):
                    return message
            seen = max(seen, len(self.messages))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {what} within {timeout}s; got {self.texts()}")
            if not alive():
                pytest.fail(f"the daemon exited before {what}; got {self.texts()}")
            self.receive(min(remaining, 0.2))

    def collect_for(self, seconds: float) -> list[Message]:
        """Everything that arrives during the next `seconds`."""
        first = len(self.messages)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.receive(remaining)
        return self.messages[first:]

    def drain(self) -> None:
        while self.receive(0.001) is not None:
            pass

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    def close(self) -> None:
        self.sock.close()


class NotifiedDaemon(DaemonProcess):
    """The real daemon, with a credential-passing notify socket and a clean environment."""

    def __init__(self, root: Path, db: Path, workdir: Path) -> None:
        super().__init__(root, db, workdir)
        self.notify: NotifySocket | None = None

    def spawn(self, *extra_args: str, env: dict[str, str] | None = None,
              prefix: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        self._starts += 1
        self.notify = NotifySocket(str(self.workdir / f"notify-cred-{self._starts}.sock"))
        full_env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("PIPELINED_", "WATCHDOG_", "JOURNAL_STREAM"))}
        full_env.update({"NOTIFY_SOCKET": self.notify.address, **(env or {})})
        self._log = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n--- start {self._starts} ---\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [*prefix, self.python, "-m", "pipelined", "run", "--root", str(self.root),
             "--db", str(self.db), "--log-format", "json", *extra_args],
            stdout=self._log, stderr=self._log, env=full_env, cwd=self.workdir,
        )
        return self.proc

    def start(self, *extra_args: str, env: dict[str, str] | None = None) -> NotifiedDaemon:
        self.spawn(*extra_args, env=env)
        self.wait_message("READY=1")
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_message(self, text: str, timeout: float = DEADLINE_S) -> None:
        self.wait_line(text, timeout)

    def wait_line(self, line: str, timeout: float = DEADLINE_S, start: int = 0) -> Message:
        """The first message (from index `start`) holding this exact line."""
        assert self.notify is not None
        return self.notify.wait_for(lambda m: m.has(line), line, timeout, self.running, start)

    def wait_status(self, prefix: str, timeout: float = DEADLINE_S, start: int = 0) -> Message:
        assert self.notify is not None
        return self.notify.wait_for(
            lambda m: (m.value("STATUS") or "").startswith(prefix), f"STATUS={prefix}…",
            timeout, self.running, start)

    def _drain(self) -> None:
        if self.notify is not None:
            self.notify.drain()

    def _close(self) -> None:
        if self.notify is not None:
            self.notify.close()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def received(self) -> list[Message]:
        assert self.notify is not None
        return self.notify.messages


@pytest.fixture
def notified(stories: Stories, tmp_path: Path) -> Iterator[NotifiedDaemon]:
    proc = NotifiedDaemon(stories.root, tmp_path / "state" / "pipeline.db", tmp_path)
    yield proc
    proc.kill()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def pings(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.has("WATCHDOG=1")]


class HoldWriteLock:
    """Another program's write transaction on the database: the daemon's writer waits."""

    def __init__(self, db: Path) -> None:
        self.conn = apsw.Connection(str(db))
        self.conn.set_busy_timeout(5000)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


# -- the pure parts ------------------------------------------------------------------


class TestNotifier:
    def test_sends_utf8_with_the_sender_pid(self, listener: NotifySocket) -> None:
        """Lines go as one UTF-8 datagram (non-Latin-1 STATUS intact), from our pid."""
        assert Notifier(listener.address).send("READY=1", "STATUS=Größe ✓ 物語 ok")
        message = listener.wait_for(lambda m: True, "a message", timeout=5)
        assert message.lines == ["READY=1", "STATUS=Größe ✓ 物語 ok"]
        assert message.pid == os.getpid()

    def test_abstract_socket_address(self, tmp_path: Path) -> None:
        """An address starting with @ is an abstract socket."""
        listener = NotifySocket(f"@pipelined-test-{os.getpid()}-{tmp_path.name}")
        try:
            assert Notifier(listener.address).send("WATCHDOG=1")
            assert listener.wait_for(lambda m: True, "a message", timeout=5).text == "WATCHDOG=1"
        finally:
            listener.close()

    def test_a_newline_in_a_value_cannot_add_an_assignment(self,
                                                           listener: NotifySocket) -> None:
        """A value with a newline stays one line: it cannot smuggle in READY=1."""
        Notifier(listener.address).send("STATUS=bad\nREADY=1")
        assert listener.wait_for(lambda m: True, "a message", timeout=5).lines == [
            "STATUS=bad READY=1"]

    def test_failure_is_reported_not_raised(self, tmp_path: Path) -> None:
        """No listener: send returns False and keeps the error; it works once one binds."""
        address = str(tmp_path / "later.sock")
        notifier = Notifier(address)
        assert notifier.send("READY=1") is False
        assert notifier.last_error and notifier.failures == 1
        listener = NotifySocket(address)
        try:
            assert notifier.send("READY=1") is True
            assert notifier.last_error is None
        finally:
            listener.close()

    def test_without_notify_socket_nothing_is_sent(self) -> None:
        """An empty or missing NOTIFY_SOCKET makes every call a no-op."""
        assert not Notifier("").enabled
        assert Notifier("").send("READY=1") is False


class TestWatchdogUsec:
    def test_honours_watchdog_pid(self) -> None:
        """WATCHDOG_USEC counts only when WATCHDOG_PID is unset or names this process."""
        assert watchdog_usec({}, pid=10) is None
        assert watchdog_usec({"WATCHDOG_USEC": "200000"}, pid=10) == 200000
        assert watchdog_usec({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "10"}, pid=10) == 200000
        assert watchdog_usec({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "11"}, pid=10) is None

    def test_bad_values_mean_no_watchdog(self) -> None:
        """Garbage, zero or a bad pid disable the watchdog instead of crashing."""
        assert watchdog_usec({"WATCHDOG_USEC": "soon"}, pid=10) is None
        assert watchdog_usec({"WATCHDOG_USEC": "0"}, pid=10) is None
        assert watchdog_usec({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "x"}, pid=10) is None

    def test_monotonic_usec_is_clock_monotonic(self) -> None:
        """MONOTONIC_USEC uses CLOCK_MONOTONIC, the clock systemd compares it with."""
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        value = monotonic_usec()
        assert before <= value <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestProgressProbe:
    def test_idle_part_is_never_stalled(self) -> None:
        """Without waiting work, no progress for ages is fine."""
        clock = FakeClock()
        probe = ProgressProbe("writer", lambda: True, done=lambda: 0, waiting=lambda: False,
                              stall_s=1.0, clock=clock)
        clock.now += 1000
        assert probe() is None

    def test_waiting_work_without_progress_stalls(self) -> None:
        """Work waiting and the progress marker unchanged for stall_s: a reason naming it."""
        clock, done = FakeClock(), [0]
        probe = ProgressProbe("writer", lambda: True, done=lambda: done[0],
                              waiting=lambda: True, stall_s=1.0, clock=clock)
        assert probe() is None
        clock.now += 0.9
        assert probe() is None
        clock.now += 0.2
        reason = probe()
        assert reason is not None and reason.startswith("writer made no progress for 1.1 s")
        done[0] += 1  # a commit: healthy again, and the clock starts over
        assert probe() is None
        clock.now += 0.9
        assert probe() is None

    def test_work_taken_resets_the_clock(self) -> None:
        """A wait that ends (work taken) starts a new one from zero."""
        clock, waiting = FakeClock(), [True]
        probe = ProgressProbe("apply thread", lambda: True, done=lambda: 0,
                              waiting=lambda: waiting[0], stall_s=1.0, clock=clock)
        probe()
        clock.now += 0.8
        waiting[0] = False
        assert probe() is None
        waiting[0] = True
        assert probe() is None
        clock.now += 0.8
        assert probe() is None

    def test_dead_thread(self) -> None:
        """A part whose thread stopped is reported at once."""
        assert ProgressProbe("watcher", lambda: False)() == "watcher is not running"


class TestLiveness:
    def test_all_reasons_in_order(self) -> None:
        """Every probe runs; the reasons come in the probes' order; none when healthy."""
        calls: list[str] = []

        def probe(name: str, reason: str | None) -> Callable[[], str | None]:
            def check() -> str | None:
                calls.append(name)
                return reason
            return check

        liveness = Liveness([probe("a", None), probe("b", "b is wedged"), probe("c", "c too")])
        assert liveness() == ["b is wedged", "c too"]
        assert calls == ["a", "b", "c"]
        assert Liveness([probe("a", None)])() == []


class TestWatchdogPinger:
    def test_pings_every_interval_only_while_healthy(self, listener: NotifySocket) -> None:
        """Due at once, then every interval; an unhealthy tick skips and leaves it due."""
        clock = FakeClock()
        pinger = WatchdogPinger.from_usec(Notifier(listener.address), 200_000, clock)
        assert pinger.interval_s == 0.1
        assert pinger.tick(healthy=True)
        assert not pinger.tick(healthy=True)  # not due yet
        assert pinger.due_in() == pytest.approx(0.1)
        clock.now += 0.1
        assert not pinger.tick(healthy=False)
        clock.now += 0.3
        assert not pinger.tick(healthy=False)
        assert pinger.due_in() == 0.0
        assert pinger.tick(healthy=True)  # the first healthy tick pings at once
        assert pinger.pings == 2
        listener.collect_for(0.2)
        assert [m.text for m in listener.messages] == ["WATCHDOG=1", "WATCHDOG=1"]

    def test_disabled_never_pings(self) -> None:
        """No watchdog (or one for another pid): never due, never sent."""
        pinger = WatchdogPinger.from_usec(Notifier(""), None)
        assert pinger.due_in() == float("inf")
        assert not pinger.tick(healthy=True)


class TestStatusLine:
    def test_in_sync(self) -> None:
        """Counts per stage and the last sync."""
        assert status_line({"2_current": 1, "1_backlog": 2}, "2026-11-26T09:00:00.000Z") == (
            "in sync: 3 stories (1_backlog 2, 2_current 1), last sync 2026-11-26T09:00:00.000Z")
        assert status_line({}, None) == "in sync: 0 stories, never synced"

    def test_degraded_and_stalled(self) -> None:
        """A failing writer reads degraded; a stalled part wins over it."""
        assert status_line({"1_backlog": 1}, None, writer_error="BusyError: locked",
                           waiting=2).startswith(
            "degraded: cannot write the database (BusyError: locked), 2 batches waiting; ")
        assert status_line({"1_backlog": 1}, None, problems=["writer is not running"],
                           writer_error="x").startswith("stalled: writer is not running; ")


class TestStatusReporter:
    def test_a_long_start_up_asks_for_more_time_each_second(
            self, listener: NotifySocket) -> None:
        """Nothing in the first second; then EXTEND_TIMEOUT_USEC= with STATUS= once a
        second; a stalled part is said instead, and no more time is asked."""
        clock = FakeClock()
        status = StatusReporter(Notifier(listener.address), lambda: ({}, None), clock.now,
                                clock)
        status.starting([])
        clock.now += 1.0
        status.starting([])
        clock.now += 0.5
        status.starting([])  # within the second: nothing
        clock.now += 0.5
        status.starting([])
        status.starting(["writer is stalled"])
        listener.collect_for(0.2)
        assert [m.text for m in listener.messages] == [
            "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=starting: reading the stories (1 s)",
            "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=starting: reading the stories (2 s)",
            "STATUS=starting, stalled: writer is stalled",
        ]

    def test_status_is_sent_when_it_changes_and_counts_read_after_commits(
            self, listener: NotifySocket) -> None:
        """The counts are read again only after new commits; an unchanged line is not
        sent again, unless resend() asked for it (after a reload); a failed read keeps
        the last counts and is tried again."""
        answers: list[Any] = [({"1_backlog": 1}, "t1"), OSError("the database is busy"),
                              ({"1_backlog": 2}, "t2")]

        def read_counts() -> tuple[dict[str, int], str | None]:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]

        clock = FakeClock()
        status = StatusReporter(Notifier(listener.address), read_counts, clock.now, clock)
        status.running([], 1, None, 0, [])
        status.running([], 1, None, 0, [])  # no new commit: no read, nothing sent
        status.running([], 2, None, 0, [])  # the read fails: the last line stays
        status.running([], 2, None, 0, [])  # read again: 2 stories
        status.resend()
        status.running([], 2, None, 0, [])
        listener.collect_for(0.2)
        assert answers == []  # read three times: after each new commit, and once again
        assert [m.text for m in listener.messages] == [
            "STATUS=in sync: 1 stories (1_backlog 1), last sync t1",
            "STATUS=in sync: 2 stories (1_backlog 2), last sync t2",
            "STATUS=in sync: 2 stories (1_backlog 2), last sync t2",
        ]


# -- the real daemon -----------------------------------------------------------------


class TestReadyStatusStopping:
    def test_ready_status_stopping_in_order_from_the_daemon(
            self, stories: Stories, notified: NotifiedDaemon) -> None:
        """READY=1 (with the story count) first, STATUS= updates with counts per stage
        and the last sync after a change, STOPPING=1 last; all from the daemon's pid."""
        stories.write("1_backlog", "1_story_a")
        stories.write("1_backlog", "2_story_b")
        stories.write("2_current", "3_story_c")
        notified.start()
        # A start slower than 1 s (a loaded machine) asks systemd for more time first.
        first = next(m for m in notified.received if m.has("READY=1"))
        assert first.lines == ["READY=1", "STATUS=in sync: 3 stories"]
        before = notified.received[:notified.received.index(first)]
        assert all(m.value("EXTEND_TIMEOUT_USEC") for m in before), [m.text for m in before]
        stories.write("4_merge", "4_story_d")
        notified.wait_row("4_story_d")
        last_sync = notified.query("SELECT value FROM daemon_meta WHERE key = 'last_sync'")[0][0]
        status = notified.wait_status(
            f"in sync: 4 stories (1_backlog 2, 2_current 1, 4_merge 1), last sync {last_sync}")
        assert notified.stop() == 0
        received = notified.received
        assert received[-1].text == "STOPPING=1"
        assert received.index(first) < received.index(status) < len(received) - 1
        assert {m.pid for m in received} == {notified.pid}
        assert not pings(received)  # no WATCHDOG_USEC, no pings
        after_ready = received[received.index(first):]
        assert not [m for m in after_ready if m.value("EXTEND_TIMEOUT_USEC")]


class TestWatchdog:
    def test_pings_at_half_the_watchdog_usec(self, stories: Stories,
                                             notified: NotifiedDaemon) -> None:
        """WATCHDOG_USEC=200000 and WATCHDOG_PID naming the daemon (a shell that execs
        it keeps its pid): WATCHDOG=1 from the daemon about every 0.1 s."""
        stories.write("1_backlog", "1_story_a")
        notified.spawn(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)},
                       prefix=("sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"',
                               "sh"))
        notified.wait_line("READY=1")
        assert notified.notify is not None
        window = notified.notify.collect_for(2.0)
        sent = pings(window)
        assert {m.pid for m in sent} == {notified.pid}
        gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
        # Generous bounds: due every 0.1 s; a loaded machine delays some.
        assert len(sent) >= 8, [round(g, 3) for g in gaps]
        assert 0.05 <= statistics.median(gaps) <= 0.2, [round(g, 3) for g in gaps]
        assert notified.stop() == 0

    def test_watchdog_for_another_pid_is_ignored(self, stories: Stories,
                                                 notified: NotifiedDaemon) -> None:
        """WATCHDOG_PID naming another process: READY and STATUS, but no WATCHDOG=1."""
        stories.write("1_backlog", "1_story_a")
        notified.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC),
                            "WATCHDOG_PID": str(os.getpid())})
        stories.write("1_backlog", "2_story_b")
        notified.wait_status("in sync: 2 stories")
        assert notified.notify is not None
        notified.notify.collect_for(1.5)  # fifteen ping intervals
        assert notified.stop() == 0
        assert not pings(notified.received)

    def test_pings_stop_while_the_writer_is_wedged(self, stories: Stories,
                                                   notified: NotifiedDaemon) -> None:
        """Another program holds a write transaction while stories change: the writer
        makes no progress with work waiting, so STATUS says stalled and WATCHDOG=1
        stops (systemd would restart the daemon); on release the batch lands and the
        pings resume."""
        stories.write("1_backlog", "1_story_a")
        notified.start(env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        notified.wait_line("WATCHDOG=1")
        lock = HoldWriteLock(notified.db)
        try:
            stories.write("2_current", "2_story_wedged", name="wedged")
            stalled = notified.wait_status("stalled: writer made no progress", timeout=10)
            assert notified.notify is not None
            quiet = notified.notify.collect_for(1.5)
            assert not pings(quiet), "pinged while the writer was wedged"
            assert notified.row("2_story_wedged") is None  # really wedged
        finally:
            lock.release()
        resumed = notified.wait_line("WATCHDOG=1", start=len(notified.received))
        notified.wait_row("2_story_wedged")
        notified.wait_status("in sync: 2 stories", start=notified.received.index(stalled))
        assert notified.stop() == 0
        received = notified.received
        assert received.index(stalled) < received.index(resumed)
        # Between the stall report and the release nothing pinged at all.
        between = received[received.index(stalled):received.index(resumed)]
        assert not pings(between)
        assert {m.pid for m in received} == {notified.pid}


class TestReload:
    def test_sighup_reloads_the_config_file(self, stories: Stories, tmp_path: Path,
                                            notified: NotifiedDaemon) -> None:
        """SIGHUP: RELOADING=1 with MONOTONIC_USEC= (taken then), READY=1 after it; the
        new log level takes effect at once, a setting that needs a restart is logged."""
        config = tmp_path / "config.toml"
        config.write_text('log_level = "info"\n', encoding="utf-8")
        stories.write("1_backlog", "1_story_a")
        notified.start("--config", str(config))
        stories.write("1_backlog", "1_story_a", name="edited at info")
        notified.wait_row("1_story_a", lambda r: r["name"] == "edited at info")
        assert not [e for e in notified.log_events() if e.get("level") == "debug"]

        config.write_text('log_level = "debug"\nsettle_ms = 150\n', encoding="utf-8")
        mark = len(notified.received)
        before = monotonic_usec()
        assert notified.proc is not None
        notified.proc.send_signal(signal.SIGHUP)
        reloading = notified.wait_line("RELOADING=1", start=mark)
        ready = notified.wait_line("READY=1", start=mark)
        after = monotonic_usec()
        usec = reloading.value("MONOTONIC_USEC")
        assert usec is not None and before <= int(usec) <= after
        assert notified.received.index(reloading) < notified.received.index(ready)
        assert not [m for m in notified.received[mark:notified.received.index(reloading)]
                    if m.has("READY=1")]
        reloaded = notified.wait_log("daemon.reloaded")
        assert reloaded["applied"] == ["log_level"]
        assert reloaded["needs_restart"] == ["settle_ms"]
        assert reloaded["level"] == "warning"

        stories.write("1_backlog", "1_story_a", name="edited at debug")
        notified.wait_row("1_story_a", lambda r: r["name"] == "edited at debug")
        wait_until(lambda: [e for e in notified.log_events() if e.get("level") == "debug"],
                   what="a debug line after the reload")
        assert notified.stop() == 0
        assert {m.pid for m in notified.received} == {notified.pid}

    def test_a_bad_config_on_reload_keeps_the_running_one(
            self, stories: Stories, tmp_path: Path, notified: NotifiedDaemon) -> None:
        """A config file broken since the start: the error is logged, READY=1 still comes,
        the daemon keeps syncing with what it had."""
        config = tmp_path / "config.toml"
        config.write_text('log_level = "info"\n', encoding="utf-8")
        notified.start("--config", str(config))
        config.write_text("settle_ms = [oops\n", encoding="utf-8")
        mark = len(notified.received)
        assert notified.proc is not None
        notified.proc.send_signal(signal.SIGHUP)
        notified.wait_line("RELOADING=1", start=mark)
        notified.wait_line("READY=1", start=mark)
        failed = notified.wait_log("daemon.reload_failed")
        assert "not valid TOML" in failed["error"]
        stories.write("2_current", "5_story_after")
        notified.wait_row("5_story_after")
        assert notified.stop() == 0


class TestExtendTimeout:
    def _slow_first_import(self, stories: Stories, notified: NotifiedDaemon,
                           env: dict[str, str] | None = None) -> HoldWriteLock:
        """A first import held back by another program's write lock, taken as soon as
        the daemon has migrated the new database (its one write before the writer)."""
        for n in range(1500):
            stories.write("1_backlog", f"{n + 1}_story_s", name=f"s {n}")
        notified.spawn(env=env)
        notified.wait_log("db.migrated")
        lock = HoldWriteLock(notified.db)
        assert notified.notify is not None
        notified.notify.drain()  # what came so far: READY must not be among it
        assert not [m for m in notified.received if m.has("READY=1")], "imported too fast"
        return lock

    def test_a_long_first_import_extends_the_start_timeout(
            self, stories: Stories, notified: NotifiedDaemon) -> None:
        """While the first import runs past a second, EXTEND_TIMEOUT_USEC= comes each
        second with a STATUS; it stops at READY."""
        lock = self._slow_first_import(stories, notified)
        try:
            extend = notified.wait_line("EXTEND_TIMEOUT_USEC=30000000", timeout=10)
            assert (extend.value("STATUS") or "").startswith("starting: reading the stories")
        finally:
            lock.release()
        ready = notified.wait_line("READY=1")
        assert notified.stop() == 0
        received = notified.received
        assert received.index(extend) < received.index(ready)
        assert not [m for m in received[received.index(ready):]
                    if m.value("EXTEND_TIMEOUT_USEC")]
        assert {m.pid for m in received} == {notified.pid}
        assert notified.query("SELECT count(*) FROM pipeline_items")[0][0] == 1500

    @pytest.mark.slow  # over about 6 s of wall time: the slow pass
    def test_a_wedged_first_import_does_not_extend(
            self, stories: Stories, notified: NotifiedDaemon) -> None:
        """When the import's writer makes no progress, the daemon stops asking for time
        (and stops pinging): systemd's start timeout can then do its job."""
        lock = self._slow_first_import(stories, notified,
                                       env={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            stalled = notified.wait_status("starting, stalled: writer made no progress",
                                           timeout=10)
            assert notified.notify is not None
            # The writer's own open may be waiting on the lock too (5 s busy timeout):
            # keep the whole hold well under that.
            quiet = notified.notify.collect_for(1.2)
            assert not [m for m in quiet if m.value("EXTEND_TIMEOUT_USEC") or m.has("WATCHDOG=1")]
        finally:
            lock.release()
        notified.wait_line("READY=1", start=notified.received.index(stalled))
        assert notified.stop() == 0


def test_notify_module_runs_without_the_daemon() -> None:
    """The notify module imports nothing heavy: usable by any script (no watchdog, pycrdt)."""
    code = ("import sys, pipelined.notify, pipelined.health; "
            "print(sorted(m for m in ('watchdog', 'pycrdt', 'apsw') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=DEADLINE_S)
    assert done.stdout.strip() == "[]"
