"""Benchmark of pipelined's sync: first import, unchanged restart, edit latency.

Run from the project root (stdlib + apsw + watchdog only; pytest does not collect it):

    python tests/bench/bench_sync.py [--n 10000] [--rounds-edit 50] [--git-changes 2000]
                                     [--burst 20000] [--keep DIR]

It writes N synthetic ~2 KB stories into 1_backlog/, 2_current/ and 4_merge/ of
a temporary folder, then measures, against the real daemon as a subprocess
(`python -m pipelined run`, readiness taken from sd_notify READY=1 on a
datagram socket this script binds as NOTIFY_SOCKET):

1. first import (Popen -> READY=1), daemon RSS after ready, database size;
2. edit -> row visible: spaced single edits of a story's `name:`, polled in
   the database through a read-only apsw connection every 2 ms;
3. restart to READY with nothing changed (median of 3, interpreter start
   included), while a watchdog observer here counts *.md files opened;
4. baseline: a full re-parse with python-frontmatter in a fresh interpreter
   (median of 3, interpreter start included);
5. a `git checkout` of a branch where --git-changes stories moved or changed:
   seconds from the checkout returning until the database shows them all, and
   the number of pycrdt transactions it took;
6. a burst of --burst new files written as fast as possible: seconds until
   every row is there.

It prints a markdown table with the issue's targets beside the numbers.
--keep DIR does the work in DIR and leaves it there (daemon logs in DIR/logs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
from watchdog.events import FileOpenedEvent, FileSystemEventHandler
from watchdog.observers import Observer

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
WORDS = ("login", "export", "board", "filter", "crash", "sync", "csv", "dark", "mode",
         "token", "reset", "cache", "search", "agent", "retry", "merge", "queue", "alert")
BASELINE = """
import glob, os, frontmatter
n = 0
for stage in {stages!r}:
    for path in glob.glob(os.path.join({root!r}, stage, '*.md')):
        frontmatter.load(path)
        n += 1
print(n)
"""


def make_stories(root: Path, n: int, rng: random.Random) -> dict[str, Path]:
    """N stories of about 2 KB each; returns id -> path."""
    for stage in STAGES:
        (root / stage).mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    filler = ("The daemon keeps the pipeline live; this paragraph only pads the "
              "story to a realistic size for the benchmark. ")
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
        body = (filler * (size // len(filler) + 1))[: max(0, size - len(head) - 1)]
        path = root / stage / f"{story_id}.md"
        path.write_text(head + body + "\n", encoding="utf-8")
        paths[story_id] = path
    return paths


class Daemon:
    """One `pipelined run` subprocess with its log file and the notify socket."""

    def __init__(self, work: Path, root: Path, db: Path, sock: socket.socket, sock_path: str):
        self.work, self.root, self.db, self.sock, self.sock_path = work, root, db, sock, sock_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.runs = 0

    def start(self) -> float:
        """Start the daemon and wait for READY=1; returns seconds from Popen."""
        self.sock.setblocking(False)
        while True:  # drop stale messages (STOPPING=1 of the previous run)
            try:
                self.sock.recv(4096)
            except BlockingIOError:
                break
        self.runs += 1
        self.log_path = self.work / "logs" / f"run-{self.runs}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PIPELINED_") and k not in ("JOURNAL_STREAM", *NO_BYTECODE)}
        env["NOTIFY_SOCKET"] = self.sock_path
        cmd = [sys.executable, "-m", "pipelined", "run", "--root", str(self.root),
               "--db", str(self.db), "--log-format", "json"]
        with open(self.log_path, "wb") as log:
            started = self.started = time.perf_counter()
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + READY_TIMEOUT_S
        self.sock.settimeout(0.1)
        while time.perf_counter() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                data = b""
            if b"READY=1" in data.split(b"\n"):
                return time.perf_counter() - started
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
            time.sleep(POLL_S)
        raise RuntimeError("no daemon.startup log line\n" + self.tail())

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
        for path in sorted((self.work / "logs").glob("run-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append({"run": path.stem, **json.loads(line)})
                except ValueError:
                    events.append({"run": path.stem, "level": "raw", "event": line})
        return events


class OpenCounter(FileSystemEventHandler):
    def __init__(self) -> None:
        self.opened: list[str] = []

    def on_opened(self, event: FileOpenedEvent) -> None:
        if str(event.src_path).endswith(".md"):
            self.opened.append(str(event.src_path))


def measure_edits(daemon: Daemon, paths: dict[str, Path], rounds: int,
                  rng: random.Random) -> tuple[list[float], int]:
    """Latency (ms) from a finished write to the new name visible in the database."""
    conn = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
    latencies, timeouts = [], 0
    try:
        for i, story_id in enumerate(rng.sample(sorted(paths), rounds)):
            path = paths[story_id]
            text = path.read_text(encoding="utf-8")
            new_name = f"bench edit {i} {rng.getrandbits(48):x}"
            lines = [f'name: "{new_name}"' if ln.startswith("name:") else ln
                     for ln in text.split("\n")]
            begun = time.perf_counter()
            with open(path, "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines))
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
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise RuntimeError("daemon died during the edits\n" + daemon.tail())
                time.sleep(POLL_S)
            time.sleep(max(0.0, begun + EDIT_SPACING_S - time.perf_counter()))
    finally:
        conn.close()
    return latencies, timeouts


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def db_mib(db: Path) -> float:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists()) / 2**20


def measure_restarts(
    daemon: Daemon, paths: dict[str, Path]
) -> tuple[list[float], list[float], list[str]]:
    """Three unchanged restarts to READY (and to the state loaded) while watchdog
    collects *.md opens."""
    restarts, loaded, counter = [], [], OpenCounter()
    for k in range(3):
        observer = Observer()
        for stage in STAGES:
            observer.schedule(counter, str(daemon.root / stage), event_filter=[FileOpenedEvent])
        observer.start()
        try:
            if k == 0:  # positive control: the observer does see an open
                next(iter(paths.values())).read_bytes()
                deadline = time.monotonic() + 5
                while not counter.opened and time.monotonic() < deadline:
                    time.sleep(0.01)
                if not counter.opened:
                    raise RuntimeError("watchdog reports no FileOpenedEvent here")
                time.sleep(0.2)
                counter.opened.clear()
            restarts.append(daemon.start())
            loaded.append(daemon.wait_state_loaded())
            time.sleep(0.3)  # let late inotify events arrive
        finally:
            observer.stop()
            observer.join(10)
        daemon.stop()
    return restarts, loaded, counter.opened


def measure_baseline(root: Path, n: int) -> list[float]:
    """Full re-parse with python-frontmatter in a fresh interpreter, 3 times."""
    code = BASELINE.format(stages=STAGES, root=str(root))
    times = []
    env = {k: v for k, v in os.environ.items() if k not in NO_BYTECODE}
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=READY_TIMEOUT_S, check=False)
        times.append(time.perf_counter() - started)
        if done.returncode != 0 or done.stdout.strip() != str(n):
            raise RuntimeError(f"baseline failed: {done.stdout}{done.stderr}")
    return times


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
        return int(conn.execute("SELECT count(*) FROM crdt_updates").fetchall()[0][0])
    finally:
        conn.close()


def measure_git_checkout(daemon: Daemon, paths: dict[str, Path], changes: int,
                         rng: random.Random) -> tuple[float, int]:
    """`git checkout` of a branch with `changes` stories moved or edited (half each):
    seconds from the checkout returning until the database shows all of them, and
    how many pycrdt transactions that took. The daemon must be stopped."""
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
    return elapsed, count_crdt_updates(daemon.db) - before


def wait_settled(daemon: Daemon, root: Path, ids: list[str]) -> float:
    """Poll until the database shows every listed story as the disk does; the time then."""
    expected = disk_view(root, ids)
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if db_view(daemon.db, ids) == expected:
            return time.perf_counter()
        time.sleep(0.02)
    raise RuntimeError("the database never matched the folders\n" + daemon.tail())


def measure_burst(daemon: Daemon, count: int, first_number: int) -> tuple[float, float]:
    """`count` new files as fast as they can be written, daemon running: seconds from the
    first write until every row is there, and from the last write."""
    text = ("---\nname: burst\nagent: null\nretry_count: 0\nblocked: false\n"
            "depends_on: null\n---\n" + "x" * 1500 + "\n")
    started = time.perf_counter()
    for k in range(count):
        (daemon.root / STAGES[k % 3] / f"{first_number + k}_story_burst.md").write_text(text)
    written = time.perf_counter()
    conn = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        deadline = written + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            got = conn.execute("SELECT count(*) FROM pipeline_items WHERE name = 'burst'"
                               ).fetchall()[0][0]
            if got == count:
                done = time.perf_counter()
                return done - started, done - written
            time.sleep(0.05)
    finally:
        conn.close()
    raise RuntimeError(f"burst: only {got} of {count} rows\n" + daemon.tail())


def run(args: argparse.Namespace) -> None:
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="pl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sock_dir = work if len(str(work)) < 80 else Path(tempfile.mkdtemp(prefix="pl-sock-"))
    sock_path = str(sock_dir / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    sock.bind(sock_path)
    db = work / "db" / "pipelined.db"
    daemon = Daemon(work, work / "root", db, sock, sock_path)
    rng = random.Random(1234)
    r: dict[str, Any] = {}
    try:
        print(f"writing {args.n} stories to {daemon.root} ...", file=sys.stderr)
        paths = make_stories(daemon.root, args.n, rng)
        print("first import ...", file=sys.stderr)
        r["first"] = daemon.start()
        r["rss"], r["hwm"] = daemon.rss_mib()
        r["db_mib"] = db_mib(db)
        print(f"{args.rounds_edit} edits ...", file=sys.stderr)
        r["lat"], r["timeouts"] = measure_edits(daemon, paths, args.rounds_edit, rng)
        daemon.stop()
        r["db_stopped_mib"] = db_mib(db)
        print("unchanged restarts ...", file=sys.stderr)
        restarts, loaded, opened = measure_restarts(daemon, paths)
        r["restart"], r["opened"] = statistics.median(restarts), len(opened)
        r["loaded"] = statistics.median(loaded)
        print("baseline re-parse ...", file=sys.stderr)
        r["baseline"] = statistics.median(measure_baseline(daemon.root, args.n))
        r["git_changes"], r["burst"] = args.git_changes, args.burst
        if args.git_changes:
            print(f"git checkout of {args.git_changes} changes ...", file=sys.stderr)
            r["git_s"], r["git_tx"] = measure_git_checkout(daemon, paths, args.git_changes, rng)
        if args.burst:
            print(f"burst of {args.burst} creates ...", file=sys.stderr)
            if daemon.proc is None or daemon.proc.poll() is not None:
                daemon.start()
            r["burst_total"], r["burst_after"] = measure_burst(daemon, args.burst, args.n + 1)
    finally:
        daemon.kill()
        sock.close()
        if sock_dir != work:
            shutil.rmtree(sock_dir, ignore_errors=True)
    report(args.n, r, daemon.log_events())
    if opened:
        print("story files opened during unchanged restarts (first 10):", *opened[:10],
              sep="\n  ")
    if args.keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def ok(good: bool) -> str:
    return "yes" if good else "NO"


def git_and_burst_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    if "git_s" in r:
        rows.append((f"git checkout of {r.get('git_changes', 2000)} changes -> no drift (s)",
                     f"{r['git_s']:.2f}", "<= 3", ok(r["git_s"] <= 3)))
        rows.append(("  pycrdt transactions for that checkout", str(r["git_tx"]), "few", ""))
    if "burst_total" in r:
        rows.append((f"burst of {r.get('burst', 20000)} creates -> all rows (s, from 1st write)",
                     f"{r['burst_total']:.1f}", "<= 30", ok(r["burst_total"] <= 30)))
        rows.append(("  of which after the last write (s)", f"{r['burst_after']:.1f}", "", ""))
    return rows


def report(n: int, r: dict[str, Any], events: list[dict[str, Any]]) -> None:
    p50, p99 = percentile(r["lat"], 50), percentile(r["lat"], 99)
    ratio = r["baseline"] / r["restart"]
    rows = [
        ("metric", "value", "target", "met"),
        ("first import (s)", f"{r['first']:.2f}", "", ""),
        ("restart to READY, unchanged (s, median of 3)", f"{r['restart']:.2f}", "", ""),
        ("restart until the pipeline state is loaded (s, median of 3)", f"{r['loaded']:.2f}",
         "", ""),
        ("re-parse baseline, python-frontmatter (s, median of 3)", f"{r['baseline']:.2f}", "", ""),
        ("ratio baseline/restart (x)", f"{ratio:.1f}", ">= 4x at 10,000",
         ok(ratio >= 4) if n >= 10_000 else "n/a"),
        ("story files opened during unchanged restarts", str(r["opened"]), "0",
         ok(r["opened"] == 0)),
        (f"edit->row p50 (ms, {len(r['lat'])} edits)", f"{p50:.0f}", "<= 200", ok(p50 <= 200)),
        (f"edit->row p99 (ms, {r['timeouts']} timeouts)", f"{p99:.0f}", "<= 500",
         ok(p99 <= 500 and not r["timeouts"])),
        ("daemon RSS after ready (MiB)", f"{r['rss']:.0f}", "<= 250 at 10,000",
         ok(r["rss"] <= 250)),
        ("daemon peak RSS, VmHWM (MiB)", f"{r['hwm']:.0f}", "", ""),
        *git_and_burst_rows(r),
        ("database size after ready, db + wal (MiB)", f"{r['db_mib']:.1f}", "", ""),
        ("database size after SIGTERM, db + wal (MiB)", f"{r['db_stopped_mib']:.1f}", "", ""),
    ]
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nproc = len(os.sched_getaffinity(0))
    print(f"\nN = {n:,} stories, Python {sys.version.split()[0]}, nproc {nproc}, {date}\n")
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for k, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for e in (e for e in events if e.get("event") == "daemon.startup"):
        print(f"{e['run']}: daemon.startup files_stat_checked={e.get('files_stat_checked')} "
              f"files_reread={e.get('files_reread')} stat_ms={e.get('stat_ms')} "
              f"ready_before_load={e.get('ready_before_load')} ms={e.get('ms')}")
    for e in [e for e in events if e.get("level") not in ("info", "debug")][:20]:
        print(f"daemon {e['run']} {e.get('level')}: {json.dumps(e, default=str)[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of stories (10000)")
    parser.add_argument("--rounds-edit", type=int, default=50, help="number of edits (50)")
    parser.add_argument("--git-changes", type=int, default=2000,
                        help="stories a git checkout moves or edits (2000; 0 skips)")
    parser.add_argument("--burst", type=int, default=20_000,
                        help="files created in one burst (20000; 0 skips)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it afterwards")
    args = parser.parse_args()
    if args.n < args.rounds_edit or args.rounds_edit < 1:
        parser.error("--n must be >= --rounds-edit >= 1")
    run(args)


if __name__ == "__main__":
    main()
