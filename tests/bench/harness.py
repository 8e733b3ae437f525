"""The infrastructure bench_sync.py measures with: no measurement lives here.

The constants several measures and the table share; synthetic stories and edits to
them; the NOTIFY_SOCKET reader and the `pipelined run` subprocess; a watchdog counter
of story files opened; read-only views of the database and the folders; running the
CLI; git. Imported by bench_sync.py and report.py, never importing either.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
from watchdog.events import FileOpenedEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

STAGES = ("1_backlog", "2_current", "4_merge")
# Both sides run as deployed: with compiled bytecode (pip writes it at install
# time; a shell that sets PYTHONDONTWRITEBYTECODE would make every start
# recompile the daemon's modules, about 40 ms, and measure that instead).
NO_BYTECODE = ("PYTHONDONTWRITEBYTECODE",)
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
EDIT_TIMEOUT_S = 10.0
EDIT_SPACING_S = 0.3
POLL_S = 0.002
RESTART_ROUNDS = 5  # restarts (and baseline runs) per measure; the median is reported
CLI_RUNS = 5
WORDS = ("login", "export", "board", "filter", "crash", "sync", "csv", "dark", "mode",
         "token", "reset", "cache", "search", "agent", "retry", "merge", "queue", "alert")
# The bodies' vocabulary: 200 words, so the search index and the parser see text as
# varied as real stories, not one repeated sentence (which compresses and indexes
# unrealistically well).
_VOCABULARY_TEXT = """
a about access account add after agent all allow also an and any api app are as
at auth back be because before being board both branch bug build but by cache call
can case change check clean cli client close code column commit config conflict
could create crash csv current dark data database date default delete deploy
design do does done each edit editor empty error event export fail field file
filter first fix folder for form from front get git give has have header history
how id if import in index input is it item its just key last like link list load
local lock log login long make mark matter merge message migration mode more move
name need new next no not note now number of old on one only open or order other
out page parse path pipeline read ready record release remove rename request reset
retry review row run save schema search see send server set should show so some
stage state status still story sync table take test text that the then there this
time title to token try type under update use user value view wait want watch
when which while will with without work write yes you
"""
VOCABULARY = tuple(_VOCABULARY_TEXT.split())

Result = dict[str, Any]


def make_stories(root: Path, n: int, rng: random.Random) -> dict[str, Path]:
    """N stories of about 2 KB each; returns id -> path."""
    for stage in STAGES:
        (root / stage).mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for num in range(1, n + 1):
        slug = "_".join(rng.sample(WORDS, 2))
        story_id = f"{num}_story_{slug}"
        stage = rng.choices(STAGES, weights=(6, 3, 1))[0]
        deps = sorted(rng.sample(range(1, num), min(num - 1, rng.randint(0, 3))))
        head = (f"---\nname: \"Story {num}: {slug.replace('_', ' ')}\"\n"
                f"agent: {rng.choice(['null', 'coder-1', 'coder-2', 'reviewer'])}\n"
                f"retry_count: {rng.randint(0, 3)}\nblocked: {rng.choice(['false', 'true'])}\n"
                f"depends_on: {deps if deps else 'null'}\npriority: {rng.choice(['low', 'high'])}\n"
                f"labels: [{', '.join(rng.sample(WORDS, 2))}]\n---\n"
                f"# Story {num}\n\n## Acceptance\n- it works\n- it is tested\n\n")
        size = rng.randint(1536, 2560)  # about 2 KB on average
        body = prose(rng, max(0, size - len(head) - 1))
        path = root / stage / f"{story_id}.md"
        path.write_text(head + body + "\n", encoding="utf-8")
        paths[story_id] = path
    return paths


def prose(rng: random.Random, size: int) -> str:
    """About `size` characters of sentences of 6-14 words from VOCABULARY, in
    paragraphs of 3-5 sentences."""
    paragraphs: list[str] = []
    used = 0
    while used < size:
        sentences = []
        for _ in range(rng.randint(3, 5)):
            words = rng.choices(VOCABULARY, k=rng.randint(6, 14))
            sentences.append(" ".join(words).capitalize() + ".")
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        used += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:size]


BACKLOG_STATUS = {"1_backlog": "To Do", "2_current": "In Progress", "4_merge": "Done"}
BACKLOG_TASK = """---
id: TASK-{n}
title: '{title}'
status: {status}
assignee: []
created_date: '2026-11-29 12:00'
labels: []
dependencies: []
ordinal: {ordinal}
---

## Description

<!-- SECTION:DESCRIPTION:BEGIN -->
{body}
<!-- SECTION:DESCRIPTION:END -->
"""


def backlog_project(binary: Path, paths: dict[str, Path], project: Path
                    ) -> dict[int, tuple[Path, str]]:
    """A Backlog.md project (npm package `backlog.md`) holding the same stories as tasks:
    same titles, the stages as To Do / In Progress / Done, the body as description.
    Returns number -> (task file, title)."""
    project.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([str(binary), "init", "bench", "--defaults"], cwd=project, check=True,
                   capture_output=True, timeout=120)
    subprocess.run([str(binary), "config", "set", "remoteOperations", "false"], cwd=project,
                   check=True, capture_output=True, timeout=60)
    tasks: dict[int, tuple[Path, str]] = {}
    for story_id, path in paths.items():
        n = int(story_id.split("_", 1)[0])
        text = path.read_text(encoding="utf-8")
        title = re.search(r'^name: "(.*)"$', text, re.M).group(1)  # type: ignore[union-attr]
        task = project / "backlog" / "tasks" / f"task-{n} - story-{n}.md"
        task.write_text(BACKLOG_TASK.format(
            n=n, title=title, status=BACKLOG_STATUS[path.parent.name], ordinal=n * 1000,
            body=text.split("---\n", 2)[2][:1500]), encoding="utf-8")
        tasks[n] = (task, title)
    return tasks


def child_env() -> dict[str, str]:
    """This environment without pipelined settings, journald's stream and the no-bytecode flag."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PIPELINED_") and k not in ("JOURNAL_STREAM", *NO_BYTECODE)}


class Notify:
    """The datagram socket the daemon sends READY=1 to (NOTIFY_SOCKET), shared by every N.

    A thread here reads it all the time, as systemd does: the daemon also sends STATUS
    lines, and an unread socket fills after 10 datagrams (net.unix.max_dgram_qlen) and
    makes its sends fail. Only that thread touches the socket until close().
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pl-sock-"))  # short: AF_UNIX paths are short
        self.path = str(self.dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.ready_at: float | None = None
        self.changed = threading.Condition()
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self.read, name="notify", daemon=True)
        self.reader.start()

    def read(self) -> None:
        while not self.closing.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            received = time.perf_counter()
            if b"READY=1" in data.split(b"\n"):
                with self.changed:
                    self.ready_at = received
                    self.changed.notify_all()

    def expect_ready(self) -> None:
        """Forget an earlier READY=1 (call before starting a daemon)."""
        with self.changed:
            self.ready_at = None

    def wait_ready(self, timeout: float) -> float | None:
        """When READY=1 arrived (perf_counter), waiting at most `timeout`; None if not yet."""
        with self.changed:
            self.changed.wait_for(lambda: self.ready_at is not None, timeout)
            return self.ready_at

    def close(self) -> None:
        self.closing.set()
        self.reader.join(5)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Daemon:
    """One `pipelined run` subprocess at a time, with a log file per run."""

    def __init__(self, work: Path, root: Path, db: Path, notify: Notify):
        self.work, self.root, self.db, self.notify = work, root, db, notify
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.runs = 0
        self.started = 0.0

    def start(self, env_extra: dict[str, str] | None = None) -> float:
        """Start the daemon and wait for READY=1; returns seconds from Popen."""
        self.notify.expect_ready()
        self.runs += 1
        self.log_path = self.work / "logs" / f"run-{self.runs}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        env = {**child_env(), "NOTIFY_SOCKET": self.notify.path, **(env_extra or {})}
        # The console script, as systemd starts it (`python -m` adds runpy's imports).
        cmd = [*pipelined_command(), "run", "--root", str(self.root),
               "--db", str(self.db), "--log-format", "json"]
        with open(self.log_path, "wb") as log:
            started = self.started = time.perf_counter()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            ready_at = self.notify.wait_ready(0.1)
            if ready_at is not None:
                return ready_at - started
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode} before READY=1\n"
                                   + self.tail())
        raise RuntimeError(f"daemon not ready after {READY_TIMEOUT_S:.0f} s\n" + self.tail())

    def wait_state_loaded(self) -> float:
        """Seconds from Popen to the `daemon.startup` log line (pipeline state loaded)."""
        assert self.log_path is not None
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if '"event": "daemon.startup"' in self.log_path.read_text(errors="replace"):
                return time.perf_counter() - self.started
            self.check_alive("while loading the state")
            time.sleep(POLL_S)
        raise RuntimeError("no daemon.startup log line\n" + self.tail())

    def check_alive(self, during: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode} {during}\n"
                               + self.tail())

    def stop(self) -> None:
        """SIGTERM and wait for exit 0."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"daemon did not exit {STOP_TIMEOUT_S:.0f} s after SIGTERM\n"
                               + self.tail()) from None
        if code != 0:
            raise RuntimeError(f"daemon exited with {code} after SIGTERM\n" + self.tail())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the daemon in MiB."""
        assert self.proc is not None
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def tail(self, lines: int = 25) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no daemon log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text)

    def log_events(self) -> list[dict[str, Any]]:
        """Every JSON log line of every run so far."""
        events = []
        for path in sorted((self.work / "logs").glob("run-*.log"),
                           key=lambda p: int(p.stem.split("-")[1])):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append({"run": path.stem, **json.loads(line)})
                except ValueError:
                    events.append({"run": path.stem, "level": "raw", "event": line})
        return events


class OpenCounter(FileSystemEventHandler):
    """Collects the *.md files watchdog sees opened."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def on_opened(self, event: FileOpenedEvent) -> None:
        if str(event.src_path).endswith(".md"):
            self.opened.append(str(event.src_path))


def with_name(text: str, name: str) -> str:
    """The story text with its `name:` line replaced."""
    return "\n".join(f'name: "{name}"' if ln.startswith("name:") else ln
                     for ln in text.split("\n"))


def rewrite_offline(path: Path, name: str) -> str:
    """A new `name:` and a new first body line, as an editor would save them; the text."""
    head, sep, body = with_name(path.read_text(encoding="utf-8"), name).partition("\n---\n")
    text = f"{head}{sep}Rewritten while the daemon was stopped: {name}.\n{body}"
    path.write_text(text, encoding="utf-8")
    return text


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def db_mib(db: Path) -> float:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists()) / 2**20


def watch_opens(root: Path, counter: OpenCounter) -> BaseObserver:
    """A started watchdog observer reporting file opens in the stage folders to `counter`."""
    observer = Observer()
    for stage in STAGES:
        observer.schedule(counter, str(root / stage), event_filter=[FileOpenedEvent])
    observer.start()
    return observer


def check_open_counter(counter: OpenCounter, probe: Path) -> None:
    """Positive control: the observer does see an open."""
    probe.read_bytes()
    deadline = time.monotonic() + 5
    while not counter.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    if not counter.opened:
        raise RuntimeError("watchdog reports no FileOpenedEvent here")
    counter.opened.clear()  # one read, one open event: nothing more of it can come


def drain_opens(counter: OpenCounter, probes: list[Path]) -> None:
    """Open each probe (one per stage folder) and wait until the observer has seen
    them all: inotify keeps each folder's events in order, so every earlier open is
    in `counter` by then. The probes' own opens are taken out again."""
    seen_before = len(counter.opened)
    for probe in probes:
        probe.read_bytes()
    deadline = time.monotonic() + 10
    while not all(str(p) in counter.opened[seen_before:] for p in probes):
        if time.monotonic() > deadline:
            raise RuntimeError("the probe opens never arrived")
        time.sleep(0.01)
    for probe in probes:
        last = len(counter.opened) - 1 - counter.opened[::-1].index(str(probe))
        del counter.opened[last]


def flush_writes() -> None:
    """Write dirty pages out before a timed run (both the daemon's and the baseline's):
    the kernel writes them back about 30 s after they were made, and that I/O would
    otherwise land inside whichever run happens to be timed then."""
    os.sync()


def check_rows(db: Path, expected: dict[str, tuple[str, str]]) -> list[str]:
    """Ids whose row does not show the expected (name, content)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = {story_id: (name, content) for story_id, name, content in
                conn.execute("SELECT id, name, content FROM pipeline_items")}
    finally:
        conn.close()
    return [story_id for story_id, want in expected.items() if rows.get(story_id) != want]


def wait_settled(daemon: Daemon, root: Path, ids: list[str]) -> float:
    """Poll until the database shows every listed story as the disk does; the time then."""
    expected = disk_view(root, ids)
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if db_view(daemon.db, ids) == expected:
            return time.perf_counter()
        daemon.check_alive("while the database caught up with the folders")
        time.sleep(0.02)
    raise RuntimeError("the database never matched the folders\n" + daemon.tail())


def pipelined_command() -> list[str]:
    """The console script installed beside this interpreter, else `python -m pipelined`."""
    script = Path(sys.executable).parent / "pipelined"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelined"]


def time_cli(args: list[str], check: Callable[[str], str | None]) -> list[float]:
    """Wall seconds of CLI_RUNS runs of `pipelined ARGS`, each checked: exit 0 and
    `check(stdout)` returning None (else the problem)."""
    return time_command([*pipelined_command(), *args], check)


def time_command(cmd: list[str], check: Callable[[str], str | None]) -> list[float]:
    """Wall seconds of CLI_RUNS runs of `cmd`, checked as in `time_cli`."""
    env, times = child_env(), []
    for _ in range(CLI_RUNS):
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=READY_TIMEOUT_S, check=False)
        times.append(time.perf_counter() - started)
        problem = (f"exit code {done.returncode}" if done.returncode != 0
                   else check(done.stdout))
        if problem is not None:
            raise RuntimeError(f"{shlex.join(cmd)}: {problem}\n{done.stderr[-2000:]}")
    return times


_PEAK_RSS = ("import resource, subprocess, sys\n"
             "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.exit(done.returncode)\n")


def peak_rss_mib(cmd: list[str]) -> float:
    """The peak RSS (MiB) of one run of `cmd`, its output thrown away (a reader that
    keeps up): ru_maxrss of the only child of a small wrapper."""
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *cmd], capture_output=True,
                          text=True, env=child_env(), timeout=READY_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: exit code {done.returncode}\n{done.stderr}")
    return int(done.stdout) / 1024


def json_list_of(n: int) -> Callable[[str], str | None]:
    def check(stdout: str) -> str | None:
        try:
            items = json.loads(stdout)
        except ValueError as exc:
            return f"output is not JSON ({exc})"
        if not isinstance(items, list) or len(items) != n:
            return f"expected a list of {n} stories, got {type(items).__name__} " \
                   f"of {len(items) if isinstance(items, list) else '?'}"
        return None
    return check


def mentions(word: str) -> Callable[[str], str | None]:
    def check(stdout: str) -> str | None:
        return None if word in stdout else f"output does not mention {word!r}"
    return check


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com",
                    "-c", "gc.auto=0", *args], cwd=root, check=True, capture_output=True)


def disk_view(root: Path, ids: list[str]) -> dict[str, tuple[str, str] | None]:
    """id -> (stage, text) on disk now, None if in no stage."""
    view: dict[str, tuple[str, str] | None] = dict.fromkeys(ids)
    for story_id in ids:
        for stage in STAGES:
            path = root / stage / f"{story_id}.md"
            if path.exists():
                view[story_id] = (stage, path.read_text(encoding="utf-8"))
    return view


def db_view(db: Path, ids: list[str]) -> dict[str, tuple[str, str] | None]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        view: dict[str, tuple[str, str] | None] = dict.fromkeys(ids)
        for story_id, stage, content in conn.execute(
            "SELECT id, stage, content FROM pipeline_items"
        ):
            if story_id in view:
                view[story_id] = (stage, content)
        return view
    finally:
        conn.close()


def count_crdt_updates(db: Path) -> int:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count = conn.execute("SELECT count(*) FROM crdt_updates").fetchall()[0][0]
    finally:
        conn.close()
    assert isinstance(count, int)
    return count
