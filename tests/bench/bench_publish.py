"""Benchmark of `pipelined publish` against the official Node y-websocket server.

Run from the project root after the test install (`npm ci --prefix tests/node` too;
pytest does not collect it):

    python tests/bench/bench_publish.py [--n 10000] [--edits 50] [--bulk-rounds 100]

At N synthetic stories (bench_sync's corpus), with the real daemon, the real
`pipelined publish` and the Node `@y/websocket-server` 0.1.1 on loopback, and
a Node `y-websocket` reader (tests/node/probe.mjs) in the room, it measures:

1. a file save visible in the remote reader's document: from the write's end to
   the reader's line naming the new `name` (spaced single edits; p50, p95), beside
   the same edit seen in the database (the daemon's part) as the baseline;
2. a new reader receiving the full state: from spawning a second reader to its
   `synced` line with N stories (node's own start included), beside node
   starting and exiting alone;
3. the room's size after `--bulk-rounds` rounds of 1,000 edits each (100,000 by
   default, each round one burst): the room's state as a reader gets it, beside
   the same content freshly encoded (`Y.encodeStateAsUpdate` both);
4. `publish`'s RSS once in sync, and after the edits.

It prints one markdown table with the issue's targets.
"""

from __future__ import annotations

import argparse
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
import threading
import time
from pathlib import Path
from typing import Any

import apsw
from harness import (
    EDIT_SPACING_S,
    Daemon,
    Notify,
    child_env,
    flush_writes,
    make_stories,
    percentile,
    pipelined_command,
    with_name,
)

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SERVER_JS = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
TIMEOUT_S = 120.0


class Child:
    """A child process whose stdout lines are kept with the time each arrived."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None, stderr: Any = subprocess.DEVNULL) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                     env=env, cwd=cwd)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line.rstrip("\n")))

    def wait_line(self, test: Any, after: int = 0, timeout: float = TIMEOUT_S
                  ) -> tuple[float, dict[str, Any]]:
        deadline = time.perf_counter() + timeout
        seen = after
        while time.perf_counter() < deadline:
            while seen < len(self.lines):
                at, line = self.lines[seen]
                seen += 1
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if test(value):
                    return at, value
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.proc.args} exited with {self.proc.returncode}")
            time.sleep(0.001)
        raise RuntimeError(f"no such line from {self.proc.args} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int) -> None:
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the y-websocket server did not listen")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def probe(port: int) -> Child:
    return Child(["node", "probe.mjs", f"ws://127.0.0.1:{port}", "pipeline"], cwd=NODE_DIR)


def db_name(db: Path, story_id: str) -> str | None:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = conn.execute("SELECT name FROM pipeline_items WHERE id = ?", (story_id,)).fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


def measure_saves(reader: Child, daemon: Daemon, paths: dict[str, Path], edits: int,
                  rng: random.Random) -> dict[str, list[float]]:
    """Save -> the reader's line with the new name (ms); save -> the row (ms)."""
    remote, local = [], []
    ids = sorted(paths)
    for n in range(edits):
        story_id = rng.choice(ids)
        name = f"bench edit {n} {rng.random():.6f}"
        text = with_name(paths[story_id].read_text(encoding="utf-8"), name)
        mark = len(reader.lines)
        paths[story_id].write_text(text, encoding="utf-8")
        saved = time.perf_counter()
        while db_name(daemon.db, story_id) != name:
            if time.perf_counter() - saved > TIMEOUT_S:
                raise RuntimeError(f"{story_id} never reached the database")
            time.sleep(0.002)
        local.append((time.perf_counter() - saved) * 1000)
        at, _ = reader.wait_line(lambda v, i=story_id, nm=name: [i, nm] in v.get("changed", []),
                                 after=mark)
        remote.append((at - saved) * 1000)
        time.sleep(EDIT_SPACING_S)
    return {"remote_ms": remote, "local_ms": local}


def measure_new_reader(port: int, n: int) -> dict[str, list[float]]:
    full, node_alone = [], []
    for _ in range(5):
        started = time.perf_counter()
        reader = probe(port)
        at, value = reader.wait_line(lambda v: "synced" in v)
        reader.stop()
        if value["synced"] != n:
            raise RuntimeError(f"a new reader got {value['synced']} stories, not {n}")
        full.append(at - started)
        started = time.perf_counter()
        subprocess.run(["node", "-e", "0"], check=True, cwd=NODE_DIR)
        node_alone.append(time.perf_counter() - started)
    return {"new_reader_s": full, "node_start_s": node_alone}


def bulk_edits(reader: Child, paths: dict[str, Path], rounds: int,
               rng: random.Random) -> int:
    """`rounds` bursts of 1,000 name edits (different stories each time); each burst is
    waited for in the room before the next. The number of edits."""
    ids = sorted(paths)
    edits = 0
    for r in range(rounds):
        chosen = rng.sample(ids, min(1000, len(ids)))
        last = None
        mark = len(reader.lines)
        for story_id in chosen:
            name = f"bulk {r} {story_id}"
            paths[story_id].write_text(with_name(paths[story_id].read_text(encoding="utf-8"),
                                                 name), encoding="utf-8")
            last = (story_id, name)
            edits += 1
        assert last is not None
        reader.wait_line(lambda v, want=list(last): want in v.get("changed", []), after=mark)
        print(f"  round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return edits


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(1234)
    work = Path(tempfile.mkdtemp(prefix="pl-bench-publish-"))
    notify = Notify()
    daemon = Daemon(work, work / "root", work / "db" / "pipelined.db", notify)
    port = free_port()
    server = Child(["node", str(SERVER_JS)], cwd=NODE_DIR,
                   env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port)})
    result: dict[str, Any] = {"n": args.n}
    publisher: Child | None = None
    reader: Child | None = None
    try:
        print(f"writing {args.n:,} stories", file=sys.stderr)
        paths = make_stories(daemon.root, args.n, rng)
        flush_writes()
        daemon.start()
        daemon.wait_state_loaded()
        wait_listening(port)
        publisher = Child([*pipelined_command(), "publish", "--root", str(daemon.root),
                           "--db", str(daemon.db), "--server",
                           f"ws://127.0.0.1:{port}/pipeline", "--log-format", "json"],
                          env=child_env(), stderr=subprocess.STDOUT)
        started = time.perf_counter()
        publisher.wait_line(lambda v: v.get("event") == "publish.connected")
        result["publish_connect_s"] = time.perf_counter() - started
        reader = probe(port)
        reader.wait_line(lambda v: v.get("synced") == args.n)
        result["publish_rss_synced_mib"] = rss_mib(publisher.proc.pid)
        print(f"{args.edits} spaced edits", file=sys.stderr)
        result |= measure_saves(reader, daemon, paths, args.edits, rng)
        print("new readers", file=sys.stderr)
        result |= measure_new_reader(port, args.n)
        print(f"{args.bulk_rounds} bursts of 1,000 edits", file=sys.stderr)
        result["bulk_edits"] = bulk_edits(reader, paths, args.bulk_rounds, rng)
        mark = len(reader.lines)
        reader.proc.send_signal(signal.SIGUSR2)
        _, sizes = reader.wait_line(lambda v: "room_bytes" in v, after=mark)
        result |= sizes
        result["publish_rss_after_mib"] = rss_mib(publisher.proc.pid)
    finally:
        for child in (reader, publisher, server):
            if child is not None:
                child.stop()
        daemon.kill()
        notify.close()
        shutil.rmtree(work, ignore_errors=True)
    return result


def table(r: dict[str, Any]) -> str:
    med = statistics.median
    rows = [
        ("save -> remote reader p50 (ms)", f"{percentile(r['remote_ms'], 50):.0f}", ""),
        ("save -> remote reader p95 (ms)", f"{percentile(r['remote_ms'], 95):.0f}", "<= 300"),
        ("  baseline: save -> row in the database, p50 / p95 (ms)",
         f"{percentile(r['local_ms'], 50):.0f} / {percentile(r['local_ms'], 95):.0f}", ""),
        ("new reader: full state (s, median of 5, node's start included)",
         f"{med(r['new_reader_s']):.2f}", "<= 1"),
        ("  baseline: node starting alone (s, median of 5)", f"{med(r['node_start_s']):.2f}", ""),
        (f"room after {r['bulk_edits']:,} edits (bytes)", f"{r['room_bytes']:,}", ""),
        ("  fresh encoding of the same content (bytes)", f"{r['fresh_bytes']:,}", ""),
        ("  room / fresh (x)", f"{r['room_bytes'] / r['fresh_bytes']:.2f}", "<= 3"),
        ("publish: first connect and full write (s)", f"{r['publish_connect_s']:.2f}", ""),
        ("publish RSS in sync (MiB)", f"{r['publish_rss_synced_mib']:.0f}", "<= 100"),
        ("publish RSS after the edits (MiB)", f"{r['publish_rss_after_mib']:.0f}", "<= 100"),
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"| {'measure':<{width}} | N = {r['n']:,} | target |",
             f"|{'-' * (width + 2)}|---|---|"]
    lines += [f"| {label:<{width}} | {value} | {target} |" for label, value, target in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="stories (10,000)")
    parser.add_argument("--edits", type=int, default=50, help="spaced single edits (50)")
    parser.add_argument("--bulk-rounds", type=int, default=100,
                        help="bursts of 1,000 edits for the room's size (100)")
    parser.add_argument("--json-out", metavar="FILE", help="write every raw number as JSON")
    args = parser.parse_args()
    if not SERVER_JS.exists():
        parser.error("run `npm ci --prefix tests/node` first")
    result = run(args)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{sys.executable} {' '.join(sys.argv)}  ({when})")
    print(table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
