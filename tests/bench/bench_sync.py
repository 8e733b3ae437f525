"""Benchmark of pipelined's sync and read commands at several sizes, beside a baseline.

Run from the project root (stdlib + apsw + watchdog only; pytest does not collect it):

    python tests/bench/bench_sync.py [--n 1000,10000,100000] [--rounds-edit 50]
                                     [--git-changes 2000] [--burst 0] [--keep DIR]
                                     [--json-out FILE]

For each N it writes N synthetic ~2 KB stories (every field) into 1_backlog/,
2_current/ and 4_merge/ of a folder of its own, then measures, against the
real daemon as a subprocess (the `pipelined` console script beside this
interpreter, as systemd starts it, else `python -m pipelined`; readiness taken from
sd_notify READY=1 on a datagram socket this script binds as NOTIFY_SOCKET):

1. first import (Popen -> READY=1); the daemon's RSS and VmHWM once the
   pipeline state is loaded; the database size (db + wal);
2. edit -> row visible: spaced single edits of a story's `name:`, polled in
   the database through a read-only apsw connection every 2 ms;
3. `pipelined ls --json`, `ls --stage 2_current` and `show ID` wall time,
   interpreter start included (median of 5, daemon running; `ls --json` must
   list N stories);
4. restart to READY with nothing changed (median of 5, interpreter start
   included) and to the `daemon.startup` log line (state loaded), while a
   watchdog observer here counts *.md files opened (must be 0); the daemon's
   RSS after each restart once the state is loaded (a long-running daemon);
5. restart after 1% of the stories (at least 1) had `name:` and body
   rewritten while the daemon was stopped (median of 5 rounds, a different 1%
   each); after READY the rows must show the new names and content;
6. baseline: a full re-parse with python-frontmatter in a fresh interpreter
   (median of 5, interpreter start included);
7. a `git checkout` of a branch where min(--git-changes, N/2) stories moved
   or changed: seconds from the checkout returning until the database shows
   them all, and the number of pycrdt transactions it took;
8. with --burst, a burst of that many new files written as fast as possible:
   seconds until every row is there.

Before each timed start (daemon or baseline) it calls sync(2), so the kernel's
writeback of earlier writes does not land inside a timed run.

A failed check (a daemon error, missing rows, a CLI exit code) stops the run
with an error and leaves that N's folder in place. It prints the machine, the
command line and one markdown table: a row per measure, a column per N, the
issue's target and whether it is met for the Ns it applies to; then, per N,
the `daemon.startup` lines and every daemon log line above info. --json-out
FILE writes every raw number. --keep DIR works in DIR/n<N> and keeps it
(daemon logs in DIR/n<N>/logs); otherwise each N's folder is deleted after it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
FILLER = ("The daemon keeps the pipeline live; this paragraph only pads the "
          "story to a realistic size for the benchmark. ")
BASELINE = """
import glob, os, frontmatter
n = 0
for stage in {stages!r}:
    for path in glob.glob(os.path.join({root!r}, stage, '*.md')):
        frontmatter.load(path)
        n += 1
print(n)
"""

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
        body = (FILLER * (size // len(FILLER) + 1))[: max(0, size - len(head) - 1)]
        path = root / stage / f"{story_id}.md"
        path.write_text(head + body + "\n", encoding="utf-8")
        paths[story_id] = path
    return paths


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

    def start(self) -> float:
        """Start the daemon and wait for READY=1; returns seconds from Popen."""
        self.notify.expect_ready()
        self.runs += 1
        self.log_path = self.work / "logs" / f"run-{self.runs}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        env = {**child_env(), "NOTIFY_SOCKET": self.notify.path}
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


def measure_edits(daemon: Daemon, paths: dict[str, Path], rounds: int,
                  rng: random.Random) -> Result:
    """Latency (ms) from a finished write to the new name visible in the database."""
    conn = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
    latencies: list[float] = []
    timeouts = 0
    try:
        for i, story_id in enumerate(rng.sample(sorted(paths), rounds)):
            path = paths[story_id]
            new_name = f"bench edit {i} {rng.getrandbits(48):x}"
            text = with_name(path.read_text(encoding="utf-8"), new_name)
            begun = time.perf_counter()
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            written = time.perf_counter()
            while True:
                row = conn.execute("SELECT name FROM pipeline_items WHERE id=?",
                                   (story_id,)).fetchone()
                now = time.perf_counter()
                if row is not None and row[0] == new_name:
                    latencies.append((now - written) * 1000)
                    break
                if now - written > EDIT_TIMEOUT_S:
                    timeouts += 1
                    print(f"  edit {i} of {story_id}: not visible after {EDIT_TIMEOUT_S} s"
                          f" (row name: {row[0] if row else None!r})", file=sys.stderr)
                    break
                daemon.check_alive("during the edits")
                time.sleep(POLL_S)
            time.sleep(max(0.0, begun + EDIT_SPACING_S - time.perf_counter()))
    finally:
        conn.close()
    return {"edit_ms": latencies, "edit_timeouts": timeouts}


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
    time.sleep(0.2)
    counter.opened.clear()


def flush_writes() -> None:
    """Write dirty pages out before a timed run (both the daemon's and the baseline's):
    the kernel writes them back about 30 s after they were made, and that I/O would
    otherwise land inside whichever run happens to be timed then."""
    os.sync()


def measure_restarts(daemon: Daemon, paths: dict[str, Path]) -> Result:
    """Unchanged restarts to READY and to the state loaded while watchdog collects *.md
    opens; the daemon's memory once the state is loaded. The daemon must be stopped."""
    restarts, loaded, rss, hwm, counter = [], [], [], [], OpenCounter()
    for k in range(RESTART_ROUNDS):
        observer = watch_opens(daemon.root, counter)
        try:
            if k == 0:
                check_open_counter(counter, next(iter(paths.values())))
            flush_writes()
            restarts.append(daemon.start())
            loaded.append(daemon.wait_state_loaded())
            time.sleep(0.3)  # let late inotify events arrive
            rss_now, hwm_now = daemon.rss_mib()
            rss.append(rss_now)
            hwm.append(hwm_now)
        finally:
            observer.stop()
            observer.join(10)
        daemon.stop()
    return {"restart_s": restarts, "restart_loaded_s": loaded, "opened": counter.opened,
            "rss_restart_mib": rss, "hwm_restart_mib": hwm}


def rewrite_offline(path: Path, name: str) -> str:
    """A new `name:` and a new first body line, as an editor would save them; the text."""
    head, sep, body = with_name(path.read_text(encoding="utf-8"), name).partition("\n---\n")
    text = f"{head}{sep}Rewritten while the daemon was stopped: {name}.\n{body}"
    path.write_text(text, encoding="utf-8")
    return text


def check_rows(db: Path, expected: dict[str, tuple[str, str]]) -> list[str]:
    """Ids whose row does not show the expected (name, content)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = {story_id: (name, content) for story_id, name, content in
                conn.execute("SELECT id, name, content FROM pipeline_items")}
    finally:
        conn.close()
    return [story_id for story_id, want in expected.items() if rows.get(story_id) != want]


def measure_changed_restarts(daemon: Daemon, paths: dict[str, Path],
                             rng: random.Random) -> Result:
    """Restarts after 1% of the stories (at least 1, a different 1% each round) changed
    while the daemon was stopped; the rows must show them at READY. Daemon stopped."""
    count = max(1, len(paths) // 100)
    pool = rng.sample(sorted(paths), min(len(paths), count * RESTART_ROUNDS))
    ready, loaded = [], []
    for k in range(RESTART_ROUNDS):
        expected = {}
        for story_id in pool[k * count:(k + 1) * count] or pool[:count]:
            name = f"offline {k} {rng.getrandbits(48):x}"
            expected[story_id] = (name, rewrite_offline(paths[story_id], name))
        flush_writes()
        ready.append(daemon.start())
        stale = check_rows(daemon.db, expected)
        if stale:
            raise RuntimeError(f"restart after {count} offline changes: at READY {len(stale)} "
                               f"rows do not show them, e.g. {stale[:5]}\n" + daemon.tail())
        loaded.append(daemon.wait_state_loaded())
        daemon.stop()
    return {"changed_count": count, "changed_restart_s": ready, "changed_loaded_s": loaded}


def measure_baseline(root: Path, n: int) -> Result:
    """Full re-parse with python-frontmatter in a fresh interpreter, RESTART_ROUNDS times."""
    code = BASELINE.format(stages=STAGES, root=str(root))
    times = []
    env = {k: v for k, v in os.environ.items() if k not in NO_BYTECODE}
    for _ in range(RESTART_ROUNDS):
        flush_writes()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=READY_TIMEOUT_S, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or done.stdout.strip() != str(n):
            raise RuntimeError(f"baseline failed: {done.stdout}{done.stderr}")
    return {"baseline_s": times}


def pipelined_command() -> list[str]:
    """The console script installed beside this interpreter, else `python -m pipelined`."""
    script = Path(sys.executable).parent / "pipelined"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelined"]


def time_cli(args: list[str], check: Callable[[str], str | None]) -> list[float]:
    """Wall seconds of CLI_RUNS runs of `pipelined ARGS`, each checked: exit 0 and
    `check(stdout)` returning None (else the problem)."""
    cmd, env, times = [*pipelined_command(), *args], child_env(), []
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


def measure_cli(daemon: Daemon, n: int, story_id: str) -> Result:
    """`ls --json`, `ls --stage 2_current` and `show ID`, daemon running."""
    where = ["--db", str(daemon.db), "--root", str(daemon.root)]
    return {
        "cli_ls_json_s": time_cli(["ls", *where, "--json"], json_list_of(n)),
        "cli_ls_stage_s": time_cli(["ls", *where, "--stage", "2_current"], lambda _: None),
        "cli_show_s": time_cli(["show", *where, story_id], mentions(story_id)),
        "cli_show_id": story_id,
    }


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


def measure_git_checkout(daemon: Daemon, paths: dict[str, Path], changes: int,
                         rng: random.Random) -> Result:
    """`git checkout` of a branch with `changes` stories moved or edited (half each):
    seconds from the checkout returning until the database shows all of them, and
    how many pycrdt transactions that took. The daemon must be stopped; it runs after."""
    root = daemon.root
    for stage in STAGES:
        (root / stage / ".gitkeep").touch()
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "stories")
    git(root, "checkout", "-q", "-b", "changed")
    changed = rng.sample(sorted(paths), changes)
    for k, story_id in enumerate(changed):
        path = next(root / s / f"{story_id}.md" for s in STAGES
                    if (root / s / f"{story_id}.md").exists())
        if k % 2:
            path.write_text(path.read_text(encoding="utf-8") + "\nEdited on the branch.\n",
                            encoding="utf-8")
        else:
            target = STAGES[(STAGES.index(path.parent.name) + 1) % len(STAGES)]
            path.rename(root / target / path.name)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "move and edit")
    git(root, "checkout", "-q", "main")
    daemon.start()
    wait_settled(daemon, root, changed)
    before = count_crdt_updates(daemon.db)
    git(root, "checkout", "-q", "changed")
    returned = time.perf_counter()
    elapsed = wait_settled(daemon, root, changed) - returned
    return {"git_changes": changes, "git_s": elapsed,
            "git_tx": count_crdt_updates(daemon.db) - before}


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


def measure_burst(daemon: Daemon, count: int, first_number: int) -> Result:
    """`count` new files as fast as they can be written, daemon running: seconds from the
    first write until every row is there, and from the last write."""
    text = ("---\nname: burst\nagent: null\nretry_count: 0\nblocked: false\n"
            "depends_on: null\n---\n" + "x" * 1500 + "\n")
    started = time.perf_counter()
    for k in range(count):
        (daemon.root / STAGES[k % 3] / f"{first_number + k}_story_burst.md").write_text(text)
    written = time.perf_counter()
    conn = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
    got: Any = 0
    try:
        deadline = written + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            got = conn.execute("SELECT count(*) FROM pipeline_items WHERE name = 'burst'"
                               ).fetchall()[0][0]
            if got == count:
                done = time.perf_counter()
                return {"burst": count, "burst_total_s": done - started,
                        "burst_after_s": done - written}
            time.sleep(0.05)
    finally:
        conn.close()
    raise RuntimeError(f"burst: only {got} of {count} rows\n" + daemon.tail())


def first_import(daemon: Daemon) -> Result:
    """Popen -> READY=1 on an empty database; memory and size once the state is loaded."""
    flush_writes()  # the stories were just written
    first = daemon.start()
    loaded = daemon.wait_state_loaded()
    rss, hwm = daemon.rss_mib()
    return {"first_s": first, "first_loaded_s": loaded, "rss_first_mib": rss,
            "hwm_first_mib": hwm, "db_ready_mib": db_mib(daemon.db)}


def step(n: int, what: str) -> None:
    print(f"N={n:,}: {what} ...", file=sys.stderr, flush=True)


def bench_one(n: int, work: Path, notify: Notify, args: argparse.Namespace) -> Result:
    """Every measure at one N, in `work`; the raw numbers and the daemon's log lines."""
    daemon = Daemon(work, work / "root", work / "db" / "pipelined.db", notify)
    rng = random.Random(1234)
    r: Result = {"n": n}
    try:
        step(n, f"writing {n:,} stories to {daemon.root}")
        paths = make_stories(daemon.root, n, rng)
        step(n, "first import")
        r |= first_import(daemon)
        step(n, f"{args.rounds_edit} edits")
        r |= measure_edits(daemon, paths, args.rounds_edit, rng)
        step(n, "CLI wall times")
        r |= measure_cli(daemon, n, rng.choice(sorted(paths)))
        daemon.stop()
        r["db_stopped_mib"] = db_mib(daemon.db)
        step(n, "unchanged restarts")
        r |= measure_restarts(daemon, paths)
        step(n, "restarts after 1% changed offline")
        r |= measure_changed_restarts(daemon, paths, rng)
        step(n, "baseline re-parse")
        r |= measure_baseline(daemon.root, n)
        changes = min(args.git_changes, n // 2)
        if changes:
            step(n, f"git checkout of {changes:,} changes")
            r |= measure_git_checkout(daemon, paths, changes, rng)
        if args.burst:
            step(n, f"burst of {args.burst:,} creates")
            if not daemon.running():
                daemon.start()
            r |= measure_burst(daemon, args.burst, n + 1)
        if daemon.running():
            daemon.stop()
    finally:
        daemon.kill()
        r["events"] = daemon.log_events()
    return summarize(r)


def summarize(r: Result) -> Result:
    """Medians, percentiles and ratios beside the raw numbers."""
    med = statistics.median
    r["edit_p50_ms"], r["edit_p99_ms"] = percentile(r["edit_ms"], 50), percentile(r["edit_ms"], 99)
    for key in ("restart_s", "restart_loaded_s", "changed_restart_s", "changed_loaded_s",
                "baseline_s", "cli_ls_json_s", "cli_ls_stage_s", "cli_show_s",
                "rss_restart_mib"):
        r[f"{key}_median"] = med(r[key])
    r["hwm_restart_mib_max"] = max(r["hwm_restart_mib"])
    r["opened_count"] = len(r["opened"])
    r["ratio_unchanged"] = r["baseline_s_median"] / r["restart_s_median"]
    r["ratio_changed"] = r["baseline_s_median"] / r["changed_restart_s_median"]
    return r


def bench_all(args: argparse.Namespace) -> dict[int, Result]:
    """Each N in its own folder, deleted after unless --keep."""
    results: dict[int, Result] = {}
    notify = Notify()
    try:
        for n in args.n:
            if args.keep:
                work = Path(args.keep).resolve() / f"n{n}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
            else:
                work = Path(tempfile.mkdtemp(prefix=f"pl-bench-n{n}-"))
            try:
                results[n] = bench_one(n, work, notify, args)
            except BaseException:
                print(f"N={n:,} failed; its folder is kept: {work}", file=sys.stderr)
                raise
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        notify.close()
    return results


# -- the table -----------------------------------------------------------------------------

EVERY_N = 0  # a Target limit that applies at every N


@dataclass(frozen=True)
class Target:
    """A limit per N (EVERY_N for all); `at_most` compares value <= limit, else >=."""

    text: str
    limits: dict[int, float]
    at_most: bool = True

    def limit(self, n: int) -> float | None:
        return self.limits.get(n, self.limits.get(EVERY_N))

    def failures(self, values: dict[int, float]) -> list[int] | None:
        """The Ns where the value misses its limit; None when the limit applies to none."""
        checked = {n: limit for n in values if (limit := self.limit(n)) is not None}
        if not checked:
            return None
        return [n for n, limit in checked.items()
                if not (values[n] <= limit if self.at_most else values[n] >= limit)]


@dataclass(frozen=True)
class Row:
    """One line of the table: the value of `key` in each N's results."""

    label: str
    key: str
    fmt: str = ".2f"
    target: Target | None = None


RSS_TARGET = Target("<= 150 at 10,000; <= 1,024 at 100,000", {10_000: 150, 100_000: 1024})


def rows(args: argparse.Namespace, results: dict[int, Result]) -> list[Row]:
    git_counts = sorted({r["git_changes"] for r in results.values() if "git_changes" in r})
    git_label = (f"{git_counts[0]:,}" if len(git_counts) == 1 else "min(--git-changes, N/2)")
    return [
        Row("first import (s)", "first_s", target=Target("<= 4 at 10,000", {10_000: 4})),
        Row(f"restart to READY, unchanged (s, median of {RESTART_ROUNDS})", "restart_s_median"),
        Row(f"restart until the state is loaded, unchanged (s, median of {RESTART_ROUNDS})",
            "restart_loaded_s_median"),
        Row(f"restart to READY, 1% changed offline (s, median of {RESTART_ROUNDS})",
            "changed_restart_s_median"),
        Row("  stories changed offline per round (rows checked at READY)", "changed_count", ",d"),
        Row(f"  until the state is loaded, 1% changed (s, median of {RESTART_ROUNDS})",
            "changed_loaded_s_median"),
        Row(f"re-parse baseline, python-frontmatter (s, median of {RESTART_ROUNDS})",
            "baseline_s_median"),
        Row("ratio baseline/restart, unchanged (x)", "ratio_unchanged", ".1f",
            Target(">= 6x at 10,000; >= 8x at 100,000", {10_000: 6, 100_000: 8}, at_most=False)),
        Row("ratio baseline/restart, 1% changed (x)", "ratio_changed", ".1f"),
        Row("story files opened during unchanged restarts", "opened_count", "d",
            Target("0", {EVERY_N: 0})),
        Row(f"edit->row p50 (ms, {args.rounds_edit} edits {EDIT_SPACING_S} s apart)",
            "edit_p50_ms", ".0f", Target("<= 150", {EVERY_N: 150})),
        Row("edit->row p99 (ms)", "edit_p99_ms", ".0f", Target("<= 300", {EVERY_N: 300})),
        Row(f"  edits not visible within {EDIT_TIMEOUT_S:.0f} s", "edit_timeouts", "d",
            Target("0", {EVERY_N: 0})),
        Row(f"git checkout of {git_label} changes -> no drift (s)", "git_s",
            target=Target("<= 3", {EVERY_N: 3})),
        Row("  stories the checkout changed", "git_changes", ",d"),
        Row("  pycrdt transactions for that checkout", "git_tx", "d"),
        Row(f"`pipelined ls --json` wall (s, median of {CLI_RUNS})", "cli_ls_json_s_median",
            ".3f", Target("<= 0.3 at 10,000", {10_000: 0.3})),
        Row(f"`pipelined ls --stage 2_current` wall (s, median of {CLI_RUNS})",
            "cli_ls_stage_s_median", ".3f"),
        Row(f"`pipelined show ID` wall (s, median of {CLI_RUNS})", "cli_show_s_median", ".3f",
            Target("<= 0.15", {EVERY_N: 0.15})),
        Row("daemon RSS after first import, state loaded (MiB)", "rss_first_mib", ".0f",
            RSS_TARGET),
        Row("daemon peak RSS during first import, VmHWM (MiB)", "hwm_first_mib", ".0f"),
        Row(f"daemon RSS after a restart, state loaded (MiB, median of {RESTART_ROUNDS})",
            "rss_restart_mib_median", ".0f", RSS_TARGET),
        Row(f"daemon peak RSS over a restart, VmHWM (MiB, max of {RESTART_ROUNDS})",
            "hwm_restart_mib_max", ".0f"),
        Row(f"burst of {args.burst:,} creates -> all rows (s, from 1st write)", "burst_total_s",
            ".1f", Target("<= 30", {EVERY_N: 30})),
        Row("  of which after the last write (s)", "burst_after_s", ".1f"),
        Row("database size after ready, db + wal (MiB)", "db_ready_mib", ".1f"),
        Row("database size after SIGTERM, db + wal (MiB)", "db_stopped_mib", ".1f"),
    ]


def met(target: Target | None, values: dict[int, float]) -> str:
    if target is None:
        return ""
    failed = target.failures(values)
    if failed is None:
        return "n/a"
    return "NO at " + ", ".join(f"{n:,}" for n in failed) if failed else "yes"


def table(args: argparse.Namespace, results: dict[int, Result]) -> list[list[str]]:
    """Header and one line per measure that some N has."""
    lines = [["measure", *(f"N = {n:,}" for n in results), "target", "met"]]
    for row in rows(args, results):
        values = {n: r[row.key] for n, r in results.items() if row.key in r}
        if not values:
            continue
        cells = [format(values[n], row.fmt) if n in values else "-" for n in results]
        lines.append([row.label, *cells, row.target.text if row.target else "",
                      met(row.target, values)])
    return lines


def markdown(lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
           for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def machine() -> dict[str, str]:
    """What the numbers were measured on, and the command that measured them."""
    import pipelined

    def proc_field(path: str, name: str) -> str:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
        return "unknown"

    mem_kib = proc_field("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": proc_field("/proc/cpuinfo", "model name"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "ram": f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else mem_kib,
        "python": sys.version.split()[0],
        "pipelined": pipelined.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(sys.orig_argv),
    }


def daemon_lines(n: int, events: list[dict[str, Any]]) -> list[str]:
    """The `daemon.startup` lines and every line above info of one N's daemon runs."""
    out = [f"N = {n:,}:"]
    for e in (e for e in events if e.get("event") == "daemon.startup"):
        out.append(f"  {e['run']}: daemon.startup files_stat_checked="
                   f"{e.get('files_stat_checked')} files_reread={e.get('files_reread')} "
                   f"stat_ms={e.get('stat_ms')} ready_before_load={e.get('ready_before_load')} "
                   f"ms={e.get('ms')}")
    logged = [e for e in events if e.get("level") not in ("info", "debug", "raw")]
    for e in logged[:20]:
        out.append(f"  daemon {e['run']} {e.get('level')}: {json.dumps(e, default=str)[:300]}")
    raw = [e for e in events if e.get("level") == "raw"]
    if len(logged) > 20:
        out.append(f"  ... and {len(logged) - 20} more log lines above info")
    if raw:  # not structlog's: a traceback, or a print left in the daemon
        out.append(f"  {len(raw)} lines that are not JSON, first: {raw[0]['run']}: "
                   f"{raw[0]['event'][:200]}")
    return out


def report(args: argparse.Namespace, results: dict[int, Result], info: dict[str, str]) -> None:
    print(f"\nMachine: {info['cpu']}, nproc {info['nproc']}, {info['ram']} RAM; "
          f"Python {info['python']}; pipelined {info['pipelined']}; {info['date']}")
    print(f"Command: {info['command']}\n")
    print(markdown(table(args, results)))
    print()
    for n, r in results.items():
        print("\n".join(daemon_lines(n, r["events"])))
        if r["opened"]:
            print("  story files opened during unchanged restarts (first 10):", *r["opened"][:10],
                  sep="\n    ")


def write_json(path: str, results: dict[int, Result], info: dict[str, str]) -> None:
    raw = {str(n): {k: v for k, v in r.items() if k != "events"} for n, r in results.items()}
    for n, r in results.items():
        raw[str(n)]["startup_events"] = [e for e in r["events"]
                                         if e.get("event") == "daemon.startup"]
    Path(path).write_text(json.dumps({"machine": info, "results": raw}, indent=2,
                                     default=str) + "\n", encoding="utf-8")


def counts(text: str) -> list[int]:
    """`1000,10000` -> [1000, 10000]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("no N given")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=counts, default=[1_000, 10_000, 100_000],
                        help="comma list of story counts (1000,10000,100000)")
    parser.add_argument("--rounds-edit", type=int, default=50, help="number of edits (50)")
    parser.add_argument("--git-changes", type=int, default=2000,
                        help="stories a git checkout moves or edits, at most N/2 (2000; 0 skips)")
    parser.add_argument("--burst", type=int, default=0,
                        help="files created in one burst (0: skipped)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR/n<N> and keep it afterwards")
    parser.add_argument("--json-out", metavar="FILE", help="write every raw number as JSON")
    args = parser.parse_args()
    if args.rounds_edit < 1 or min(args.n) < max(args.rounds_edit, 2):
        parser.error("every N must be >= --rounds-edit >= 1 and >= 2")
    info = machine()
    results = bench_all(args)
    report(args, results, info)
    if args.json_out:
        write_json(args.json_out, results, info)
    if args.keep:
        print(f"kept {Path(args.keep).resolve()}")


if __name__ == "__main__":
    main()
