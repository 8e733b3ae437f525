"""Fixtures: a temporary stories root, and the real daemon as a subprocess.

`daemon.start()` runs `python -m pipelined run` with `NOTIFY_SOCKET` pointing
at a datagram socket the test binds, and waits for `READY=1`: READY comes
after the startup stat pass, so the database is in sync from then on. Every
wait polls a condition with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

STAGES = ("1_backlog", "2_current", "4_merge")
DEADLINE_S = 30.0


def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE_S,
               what: str = "condition", interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stopped_clean(db: Path) -> bool:
    """Whether the writer's mark of a clean stop is in the database (store/integrity.py)."""
    from pipelined.store import integrity

    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)
        return integrity.stopped_clean(conn)
    finally:
        conn.close()


def git(cwd: Path, *args: str) -> str:
    """git in `cwd` as a test user, no detached-head advice, no line-end conversion;
    its stdout. Fails the test on a non-zero exit."""
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
         "-c", "advice.detachedHead=false", "-c", "core.autocrlf=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True, timeout=DEADLINE_S,
    ).stdout


def observe(condition: Callable[[], bool], seconds: float) -> bool:
    """True if `condition` held at every poll for `seconds` (an observation window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.02)
    return condition()


def story_text(name: str | None = "A story", agent: str | None = None, retry_count: int = 0,
               blocked: bool = False, depends_on: list[int] | None = None,
               body: str = "Body text.\n", **extra: Any) -> str:
    lines = ["---", f"name: {json.dumps(name)}", f"agent: {json.dumps(agent)}",
             f"retry_count: {retry_count}", f"blocked: {json.dumps(blocked)}",
             f"depends_on: {json.dumps(depends_on)}"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join([*lines, "---", body])


class Stories:
    """A stories root with the three stage folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for stage in STAGES:
            (root / stage).mkdir(parents=True, exist_ok=True)

    def path(self, stage: str, story_id: str) -> Path:
        return self.root / stage / f"{story_id}.md"

    def write(self, stage: str, story_id: str, text: str | None = None, **fields: Any) -> Path:
        path = self.path(stage, story_id)
        path.write_text(text if text is not None else story_text(**fields), encoding="utf-8")
        return path

    def move(self, story_id: str, from_stage: str, to_stage: str) -> None:
        os.rename(self.path(from_stage, story_id), self.path(to_stage, story_id))


class DaemonProcess:
    """The real daemon, started and stopped by a test."""

    def __init__(self, root: Path, db: Path, workdir: Path) -> None:
        self.root = root
        self.db = db
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.messages: list[str] = []
        self._sock: socket.socket | None = None
        self._log_path = workdir / "daemon.log"
        self._starts = 0
        self.python = sys.executable
        self.prefix: list[str] = []  # e.g. setpriv, to run the daemon with fewer capabilities

    # -- lifecycle ----------------------------------------------------------------

    def spawn(self, *extra_args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._close()  # a previous run that exited by itself (e.g. refused to start)
        self._starts += 1
        sock_path = self.workdir / f"notify-{self._starts}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self.messages = []
        full_env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "PIPELINED_LOG_LEVEL": "debug"}
        full_env.pop("PIPELINED_CONFIG", None)
        full_env.update(env or {})
        self._log = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"\n--- start {self._starts} ---\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [*self.prefix, self.python, "-m", "pipelined", "run", "--root", str(self.root),
             "--db", str(self.db), "--log-format", "json", *extra_args],
            stdout=self._log, stderr=self._log, env=full_env, cwd=self.workdir,
        )
        return self.proc

    def start(self, *extra_args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        self.spawn(*extra_args, env=env)
        self.wait_message("READY=1")
        return self

    def wait_message(self, text: str, timeout: float = DEADLINE_S) -> None:
        assert self._sock is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.messages):
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited ({self.proc.returncode}) before {text}:\n"
                            f"{self.log_tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {text} within {timeout}s:\n{self.log_tail()}")
            self._sock.settimeout(min(remaining, 0.2))
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEADLINE_S) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"daemon did not stop within {timeout}s:\n{self.log_tail(150)}")
        self._drain()
        self._close()
        return code

    def dump_stacks(self) -> None:
        """Every thread's stack into the daemon's log (faulthandler on SIGUSR1), for
        the failure message of a daemon that hangs."""
        assert self.proc is not None
        log_size = self._log_path.stat().st_size if self._log_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            size = self._log_path.stat().st_size if self._log_path.exists() else 0
            if size > log_size and b"File " in self._log_path.read_bytes()[log_size:]:
                break
            time.sleep(0.1)

    def _drain(self) -> None:
        """Keep the messages sent after READY (STOPPING=1, …)."""
        if self._sock is None:
            return
        self._sock.setblocking(False)
        while True:
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except (BlockingIOError, OSError):
                return

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None  # type: ignore[assignment]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self._log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def wait_log(self, event: str, count: int = 1) -> dict[str, Any]:
        """The `count`-th log line with this event name, once it is written."""
        def find() -> dict[str, Any] | None:
            found = [e for e in self.log_events() if e.get("event") == event]
            return found[count - 1] if len(found) >= count else None
        return wait_until(find, what=f"log event {event} #{count}")  # type: ignore[no-any-return]

    # -- looking at the database --------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = apsw.Connection(str(self.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            conn.set_busy_timeout(5000)
            return list(conn.execute(sql, params))
        finally:
            conn.close()

    def errors(self, story_id: str) -> list[tuple[str, str]]:
        """The errors stored for a story, as (code, message) pairs."""
        rows = self.query("SELECT errors FROM story_extras WHERE id = ?", (story_id,))
        stored = json.loads(rows[0][0]) if rows and rows[0][0] else []
        return [(e["code"], e["message"]) for e in stored]

    def rows(self) -> dict[str, dict[str, Any]]:
        cols = ("id", "name", "stage", "agent", "retry_count", "blocked", "depends_on",
                "content", "created_at", "updated_at")
        return {r[0]: dict(zip(cols, r, strict=True))
                for r in self.query(f"SELECT {', '.join(cols)} FROM pipeline_items")}

    def row(self, story_id: str) -> dict[str, Any] | None:
        return self.rows().get(story_id)

    def wait_row(self, story_id: str, predicate: Callable[[dict[str, Any]], bool] = bool,
                 timeout: float = DEADLINE_S) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.row(story_id)
            return row if row is not None and predicate(row) else None
        return wait_until(check, timeout, f"row {story_id} to match")  # type: ignore[no-any-return]

    def wait_gone(self, story_id: str, timeout: float = DEADLINE_S) -> None:
        wait_until(lambda: self.row(story_id) is None, timeout, f"row {story_id} to go")

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "pipelined", *args, "--root", str(self.root),
             "--db", str(self.db)],
            capture_output=True, text=True, timeout=DEADLINE_S, check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"pipelined {' '.join(args)} exited {result.returncode}:\n"
                        f"{result.stdout}\n{result.stderr}")
        return result


def folder_matches_db(stories: Stories, daemon: DaemonProcess) -> bool:
    """True when every story file's text and stage equal its row, and no row is extra."""
    on_disk: dict[str, tuple[str, str]] = {}
    for stage in STAGES:
        for path in (stories.root / stage).glob("*.md"):
            on_disk[path.stem] = (stage, path.read_text(encoding="utf-8"))
    rows = daemon.rows()
    return set(rows) == set(on_disk) and all(
        rows[i]["stage"] == stage and rows[i]["content"] == text
        for i, (stage, text) in on_disk.items())


def state_matches_rows(daemon: DaemonProcess) -> bool:
    """The document rebuilt from the persisted updates equals the metadata columns."""
    from pipelined.state import PipelineState  # pycrdt, only for the tests that use it

    state = PipelineState(client_id=11)
    state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
    doc = state.to_dict()
    rows = daemon.rows()
    if set(doc) != set(rows):
        return False
    for story_id, values in doc.items():
        row = rows[story_id]
        deps = json.loads(values["depends_on"]) if values["depends_on"] else None
        row_deps = json.loads(row["depends_on"]) if row["depends_on"] else None
        blocked = None if row["blocked"] is None else bool(row["blocked"])
        if (values["stage"], values["name"], values["agent"], values["retry_count"],
                values["blocked"], deps) != (row["stage"], row["name"], row["agent"],
                                             row["retry_count"], blocked, row_deps):
            return False
    return True


# Running as root, file modes bind a process only without CAP_DAC_OVERRIDE.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


@functools.cache
def modes_bind_prefix() -> tuple[str, ...] | None:
    """A command prefix under which file modes bind a started process: none needed
    when this user is not root, NO_DAC for root when setpriv can drop the
    capability, None when neither works (the tests needing it are skipped)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*NO_DAC, "true"], capture_output=True, check=False)
    return NO_DAC if probe.returncode == 0 else None


needs_modes = pytest.mark.skipif(
    modes_bind_prefix() is None,
    reason="needs a user file modes apply to, or setpriv to drop CAP_DAC_OVERRIDE as root")


@functools.cache
def userns_inotify_limits() -> bool:
    """Whether a user namespace of its own (with its own inotify limits) can be made."""
    if shutil.which("unshare") is None or not Path("/proc/sys/user/max_inotify_watches").exists():
        return False
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                            "echo 1 > /proc/sys/user/max_inotify_watches"],
                           capture_output=True, check=False, timeout=DEADLINE_S)
    return probe.returncode == 0


DAEMON_FIXTURES = frozenset({"daemon", "notified", "synced"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start the real daemon are `e2e` (`pytest -m "not e2e"` runs the rest
    in seconds): those using a daemon fixture, and modules that mark themselves."""
    for item in items:
        if DAEMON_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def stories(tmp_path: Path) -> Stories:
    return Stories(tmp_path / "root")


@pytest.fixture
def daemon(stories: Stories, tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(stories.root, tmp_path / "state" / "pipeline.db", tmp_path)
    yield proc
    proc.kill()


@pytest.fixture
def log_events(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON log lines written from now on (threads log to stderr too)."""
    from pipelined.logs import configure_logging

    configure_logging("json", "debug")  # applied, with this test's stderr, on the next line
    try:
        yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines()
                       if line.startswith("{")]
    finally:
        configure_logging()  # the next test's first line picks up its own stderr


class Served:
    """A `pipelined serve` subprocess; requests with http.client (the stdlib)."""

    def __init__(self, stories: Stories, db: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelined", "serve", "--root", str(stories.root),
             "--db", str(db), "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:  # it did not start: no server left behind
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"pipelined serve did not start: {line}{self.proc.stderr.read()}")
        self.port = int(match.group(1))
        self.host = f"127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE_S)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={
                "content-type": "application/json", **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
            shown = json.loads(raw) if response.getheader("content-type", "").startswith(
                "application/json") else raw.decode()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, shown
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Any:
        status, _headers, body = self.request("GET", path, headers=headers)
        assert status == 200, (path, status, body)
        return body

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(DEADLINE_S)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
