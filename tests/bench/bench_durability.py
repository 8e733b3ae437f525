"""Durability benchmark: kill -9 rounds, and compaction over a long history.

Run from the project root (not collected by pytest):

    python tests/bench/bench_durability.py [--stories 1000] [--rounds 20] [--edits 100000]

1. Crash rounds: N stories; then, each round, a random burst of edits and stage
   moves (sometimes all N at once), a SIGKILL at a random moment, a restart to
   READY, and three checks: the database equals the folders, every created_at
   is the first one ever seen, the pycrdt state rebuilt from the persisted
   updates equals the rows. Prints the rounds survived with zero drift.
2. Compaction: --edits field overwrites (bursts that edit every story), once
   with the default settings and once with compaction off
   (PIPELINED_COMPACT_UPDATES=0); for each, the stored pycrdt bytes, the
   database size and the restart time to READY and to the loaded state, beside
   what a fresh import of the final state stores; and the longest time a
   compaction held the writer.
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
import time
from pathlib import Path
from typing import Any

import apsw

STAGES = ("1_backlog", "2_current", "4_merge")
TIMEOUT_S = 300.0


class Daemon:
    """`python -m pipelined run` with a NOTIFY_SOCKET bound here."""

    def __init__(self, root: Path, db: Path, work: Path, env: dict[str, str] | None = None):
        self.root, self.db, self.work = root, db, work
        # As deployed: with compiled bytecode (see NO_BYTECODE in harness.py).
        self.env = {k: v for k, v in {**os.environ, **(env or {})}.items()
                    if k != "PYTHONDONTWRITEBYTECODE"}
        self.sock_path = str(work / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "daemon.log"

    def start(self) -> float:
        self.sock.setblocking(False)
        while True:
            try:
                self.sock.recv(4096)
            except BlockingIOError:
                break
        self.sock.settimeout(0.1)
        self.env["NOTIFY_SOCKET"] = self.sock_path
        with open(self.log, "ab") as log:
            started = self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelined", "run", "--root", str(self.root), "--db",
                 str(self.db), "--log-format", "json"], env=self.env, stdout=log, stderr=log)
        while time.perf_counter() - started < TIMEOUT_S:
            try:
                if b"READY=1" in self.sock.recv(4096).split(b"\n"):
                    return time.perf_counter() - started
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.tail()}")
        raise RuntimeError("no READY\n" + self.tail())

    def wait_loaded(self, count: int) -> float:
        """Seconds from start to the count-th `daemon.startup` log line."""
        while time.perf_counter() - self.started < TIMEOUT_S:
            if self.log.read_text(errors="replace").count('"event": "daemon.startup"') >= count:
                return time.perf_counter() - self.started
            time.sleep(0.005)
        raise RuntimeError("no daemon.startup\n" + self.tail())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(60)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def query(self, sql: str) -> list[Any]:
        conn = apsw.Connection(str(self.db), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found


def write_story(root: Path, stage: str, story_id: str, name: str, retry: int = 0) -> None:
    (root / stage / f"{story_id}.md").write_text(
        f"---\nname: {json.dumps(name)}\nagent: coder\nretry_count: {retry}\nblocked: false\n"
        f"depends_on: null\n---\n" + "Body of the story. " * 60 + "\n", encoding="utf-8")


def make_root(work: Path, n: int) -> tuple[Path, dict[str, str]]:
    root = work / "root"
    for stage in STAGES:
        (root / stage).mkdir(parents=True)
    where = {}
    for k in range(n):
        story_id = f"{k + 1}_story_d"
        where[story_id] = STAGES[k % 3]
        write_story(root, where[story_id], story_id, f"d{k}")
    return root, where


def drift(daemon: Daemon, where: dict[str, str]) -> int:
    """Stories whose row differs from the file (stage or content), plus missing or extra."""
    rows = {r[0]: (r[1], r[2]) for r in daemon.query(
        "SELECT id, stage, content FROM pipeline_items")}
    bad = len(set(rows) ^ set(where))
    for story_id, stage in where.items():
        path = daemon.root / stage / f"{story_id}.md"
        if rows.get(story_id) != (stage, path.read_text(encoding="utf-8")):
            bad += 1
    return bad


def state_disagrees(daemon: Daemon) -> int:
    from pipelined.state import PipelineState

    state = PipelineState(client_id=13)
    state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
    doc = state.to_dict()
    rows = {r[0]: r[1:] for r in daemon.query(
        "SELECT id, stage, name, retry_count FROM pipeline_items")}
    bad = len(set(doc) ^ set(rows))
    for story_id, values in doc.items():
        if story_id in rows and rows[story_id] != (values["stage"], values["name"],
                                                   values["retry_count"]):
            bad += 1
    return bad


def crash_rounds(work: Path, n: int, rounds: int, rng: random.Random) -> dict[str, Any]:
    root, where = make_root(work, n)
    daemon = Daemon(root, work / "crash.db", work)
    daemon.start()
    first = dict(daemon.query("SELECT id, created_at FROM pipeline_items"))
    survived, restarts = 0, []
    try:
        for round_no in range(rounds):
            size = n if round_no % 5 == 4 else rng.randint(1, n // 5)
            for story_id in rng.sample(sorted(where), size):
                stage = where[story_id]
                if rng.random() < 0.5:
                    target = rng.choice([s for s in STAGES if s != stage])
                    (root / stage / f"{story_id}.md").rename(root / target / f"{story_id}.md")
                    where[story_id] = target
                else:
                    write_story(root, stage, story_id, f"r{round_no}", rng.randint(0, 3))
            time.sleep(rng.uniform(0.0, 0.5))  # the kill lands at a random moment
            daemon.stop(signal.SIGKILL)
            restarts.append(daemon.start())
            created = dict(daemon.query("SELECT id, created_at FROM pipeline_items"))
            ok = (drift(daemon, where) == 0 and created == first
                  and state_disagrees(daemon) == 0)
            survived += ok
            print(f"  round {round_no + 1}: {size} changes, "
                  f"{'ok' if ok else 'DRIFT'}", file=sys.stderr)
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()
        daemon.sock.close()
    return {"rounds": rounds, "survived": survived, "restart_median_s": statistics.median(restarts)}


def history(work: Path, n: int, edits: int, compact: bool) -> dict[str, Any]:
    """`edits` overwrites in bursts of n (one field each), then a restart."""
    sub = work / ("compacted" if compact else "not-compacted")
    sub.mkdir()
    root, where = make_root(sub, n)
    env = {} if compact else {"PIPELINED_COMPACT_UPDATES": "0"}
    daemon = Daemon(root, sub / "pipelined.db", sub, env)
    try:
        daemon.start()
        for burst in range(edits // n):
            for story_id, stage in where.items():
                write_story(root, stage, story_id, f"b{burst}")
            deadline = time.perf_counter() + TIMEOUT_S
            while daemon.query(f"SELECT count(*) FROM pipeline_items WHERE name = 'b{burst}'"
                               )[0][0] != n:
                if time.perf_counter() > deadline:
                    raise RuntimeError("burst never landed\n" + daemon.tail())
                time.sleep(0.02)
        daemon.stop()
        stored = daemon.query("SELECT coalesce(sum(length(data)), 0), count(*) FROM crdt_updates")
        size = sum(p.stat().st_size for p in sub.glob("pipelined.db*") if p.suffix != ".lock")
        ready = daemon.start()
        loaded = daemon.wait_loaded(2)
        holds = [e["ms"] for e in daemon.events("writer.compaction_committed")]
        daemon.stop()
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()
        daemon.sock.close()
    from pipelined.state import PipelineState

    state = PipelineState(client_id=17)
    state.load(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates ORDER BY seq"))
    fresh = len(state.fresh_snapshot(19))
    return {"crdt_bytes": stored[0][0], "crdt_rows": stored[0][1], "fresh_bytes": fresh,
            "db_mib": size / 2**20, "ready_s": ready, "loaded_s": loaded,
            "max_compaction_hold_ms": max(holds, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--edits", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pl-dur-"))
    rng = random.Random(7)
    try:
        print("crash rounds ...", file=sys.stderr)
        (work / "crash").mkdir()
        crash = crash_rounds(work / "crash", args.stories, args.rounds, rng)
        print("history, compacted ...", file=sys.stderr)
        compacted = history(work, args.stories, args.edits, compact=True)
        print("history, compaction off ...", file=sys.stderr)
        plain = history(work, args.stories, args.edits, compact=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nN = {args.stories:,} stories, {args.edits:,} edits, Python "
          f"{sys.version.split()[0]}, nproc {os.cpu_count()}, {time.strftime('%Y-%m-%d')}\n")
    print("| measure | compacted (default) | compaction off | target |")
    print("|---|---|---|---|")
    ratio_c = compacted["crdt_bytes"] / compacted["fresh_bytes"]
    ratio_p = plain["crdt_bytes"] / plain["fresh_bytes"]
    print(f"| stored pycrdt data (MB) | {compacted['crdt_bytes'] / 1e6:.2f} | "
          f"{plain['crdt_bytes'] / 1e6:.2f} | |")
    print(f"| ... vs a fresh import of the final state | {ratio_c:.2f}x | {ratio_p:.2f}x | "
          f"<= 2x compacted |")
    print(f"| pycrdt rows | {compacted['crdt_rows']} | {plain['crdt_rows']} | |")
    print(f"| database size (MiB) | {compacted['db_mib']:.1f} | {plain['db_mib']:.1f} | |")
    print(f"| restart to READY (s) | {compacted['ready_s']:.2f} | {plain['ready_s']:.2f} | |")
    print(f"| restart to loaded state (s) | {compacted['loaded_s']:.2f} | "
          f"{plain['loaded_s']:.2f} | no growth with history |")
    print(f"| longest compaction holding the writer (ms) | "
          f"{compacted['max_compaction_hold_ms']} | - | |")
    print(f"\nkill -9 rounds survived with zero drift: {crash['survived']} of {crash['rounds']} "
          f"(restart to READY median {crash['restart_median_s']:.2f} s)")


if __name__ == "__main__":
    main()
