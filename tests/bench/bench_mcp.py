"""Benchmark of `pipelined mcp` at N stories, beside the same queries through the CLI.

Run from the project root after the test install (pytest does not collect it):

    python tests/bench/bench_mcp.py [--n 10000] [--calls 100] [--json-out FILE]

It writes N synthetic stories (harness.make_stories), starts the real daemon
and waits for READY, then measures with the official SDK's client over stdio
(`mcp.Client(StdioServerParameters(...))`, the way agent clients start it):

1. start to an answered `initialize`: `pipelined mcp` spawned afresh each time
   (median of 5), beside the floor: a bare `MCPServer` of the same SDK with no
   tool, started by the same interpreter (the SDK's own import is most of it);
2. on one warm server: `story_view` of random ids, `story_list` (limit 50, a
   stage or an agent filter, each page checked), `story_search` of one word;
   p50 and p95 of --calls calls each, timed around the client call;
3. `story_update` -> visible in `story_view`: a new name set through the tool,
   then `story_view` polled until it shows it; beside it, in the same run, a
   direct file edit -> the row visible in SQLite (the daemon's edit->row);
4. the same three reads through the CLI (`show ID --json`, `ls --stage S
   --limit 50 --json`, `search WORD --json`): wall time of a fresh process,
   median of 5, as a person or a shell-out agent pays it.

It prints one markdown table (measure, value, target, met).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import apsw
from harness import (
    Daemon,
    Notify,
    json_list_of,
    make_stories,
    mentions,
    percentile,
    pipelined_command,
    time_cli,
    with_name,
)
from mcp import Client, StdioServerParameters

INIT_ROUNDS = 5
UPDATE_ROUNDS = 20
POLL_S = 0.002


def server_params(root: Path, db: Path) -> StdioServerParameters:
    command = pipelined_command()
    return StdioServerParameters(command=command[0],
                                 args=[*command[1:], "mcp", "--root", str(root),
                                       "--db", str(db)])


async def time_initialize(params: StdioServerParameters) -> float:
    started = time.perf_counter()
    async with Client(params, read_timeout_seconds=60):
        return time.perf_counter() - started


async def timed(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await client.call_tool(tool, arguments)
    elapsed = time.perf_counter() - started
    if result.is_error:
        raise RuntimeError(f"{tool} {arguments}: {result.content}")
    return elapsed, result.structured_content


def row_name(db: Path, story_id: str) -> str | None:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = conn.execute("SELECT name FROM pipeline_items WHERE id = ?", (story_id,)).fetchone()
        return None if row is None else row[0]
    finally:
        conn.close()


async def warm_measures(params: StdioServerParameters, ids: list[str], paths: dict[str, Path],
                        db: Path, calls: int, rng: random.Random) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"view": [], "list": [], "search": [], "update": [],
                                   "file_edit": []}
    async with Client(params, read_timeout_seconds=60) as client:
        await client.call_tool("story_view", {"id": ids[0]})  # warm the connection
        for _ in range(calls):
            elapsed, value = await timed(client, "story_view", {"id": rng.choice(ids)})
            assert value["story"]["id"]
            out["view"].append(elapsed)
        for n in range(calls):
            filters = ({"stage": "current"} if n % 2 else {"agent": "coder-1"})
            elapsed, value = await timed(client, "story_list", {**filters, "limit": 50})
            assert len(value["stories"]) == 50, value["total"]
            out["list"].append(elapsed)
        for _ in range(calls):
            elapsed, value = await timed(client, "story_search",
                                         {"query": rng.choice(["login", "export", "crash"])})
            assert value["hits"]
            out["search"].append(elapsed)
        for n in range(UPDATE_ROUNDS):
            story_id = rng.choice(ids)
            name = f"renamed through mcp {n}"
            started = time.perf_counter()
            await timed(client, "story_update", {"id": story_id, "name": name})
            while True:
                _elapsed, value = await timed(client, "story_view", {"id": story_id})
                if value["story"]["name"] == name:
                    break
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"{story_id} never showed {name!r}")
                await anyio.sleep(POLL_S)
            out["update"].append(time.perf_counter() - started)
            await anyio.sleep(0.3)
            # The daemon's own edit->row in the same run: a file edit, the row polled.
            other = rng.choice(ids)
            name = f"renamed in the file {n}"
            started = time.perf_counter()
            paths[other].write_text(with_name(paths[other].read_text(), name))
            while row_name(db, other) != name:
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"{other} never showed {name!r}")
                time.sleep(POLL_S)
            out["file_edit"].append(time.perf_counter() - started)
            await anyio.sleep(0.3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(7)
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    notify = Notify()
    root, db = work / "root", work / "p.db"
    paths = make_stories(root, args.n, rng)
    ids = sorted(paths)
    daemon = Daemon(work, root, db, notify)
    try:
        daemon.start()
        daemon.wait_state_loaded()
        params = server_params(root, db)
        inits = [anyio.run(time_initialize, params) for _ in range(INIT_ROUNDS)]
        bare = StdioServerParameters(command=sys.executable, args=[
            "-c", "from mcp.server.mcpserver import MCPServer; MCPServer('bare').run('stdio')"])
        floor = [anyio.run(time_initialize, bare) for _ in range(INIT_ROUNDS)]
        warm = anyio.run(warm_measures, params, ids, paths, db, args.calls, rng)
        sample = rng.choice(ids)
        cli = {
            "view": time_cli(["show", sample, "--json", "--root", str(root), "--db", str(db)],
                             mentions(sample)),
            "list": time_cli(["ls", "--stage", "2_current", "--limit", "50", "--json",
                              "--root", str(root), "--db", str(db)], json_list_of(50)),
            "search": time_cli(["search", "login", "--json", "--root", str(root),
                                "--db", str(db)], mentions("login")),
        }
    finally:
        if daemon.running():
            daemon.stop()
        notify.close()
    ms = 1000.0
    update_p50 = statistics.median(warm["update"]) * ms
    edit_p50 = statistics.median(warm["file_edit"]) * ms
    rows = [
        ("`pipelined mcp` start to answered initialize (s, median of 5)",
         f"{statistics.median(inits):.2f}", "<= 0.6", statistics.median(inits) <= 0.6),
        ("  a bare MCPServer of the same SDK, same run (s, median of 5)",
         f"{statistics.median(floor):.2f}", "", None),
        ("`story_view` p50 / p95 (ms)",
         f"{percentile(warm['view'], 50) * ms:.1f} / {percentile(warm['view'], 95) * ms:.1f}",
         "p50 <= 5", percentile(warm["view"], 50) * ms <= 5),
        ("`story_list` limit 50, p50 / p95 (ms)",
         f"{percentile(warm['list'], 50) * ms:.1f} / {percentile(warm['list'], 95) * ms:.1f}",
         "p50 <= 10", percentile(warm["list"], 50) * ms <= 10),
        ("`story_search` p50 / p95 (ms)",
         f"{percentile(warm['search'], 50) * ms:.1f} / "
         f"{percentile(warm['search'], 95) * ms:.1f}",
         "p50 <= 30", percentile(warm["search"], 50) * ms <= 30),
        ("`story_update` -> visible in `story_view`, p50 (ms)", f"{update_p50:.0f}",
         "<= edit->row + 20", update_p50 <= edit_p50 + 20),
        ("  file edit -> row, same run, p50 (ms)", f"{edit_p50:.0f}", "", None),
        ("CLI `show ID --json` wall (ms, median of 5)",
         f"{statistics.median(cli['view']) * ms:.0f}", "", None),
        ("CLI `ls --stage 2_current --limit 50 --json` wall (ms, median of 5)",
         f"{statistics.median(cli['list']) * ms:.0f}", "", None),
        ("CLI `search login --json` wall (ms, median of 5)",
         f"{statistics.median(cli['search']) * ms:.0f}", "", None),
    ]
    print(f"N = {args.n:,}; {args.calls} calls per read tool; python {sys.version.split()[0]}")
    print(f"| measure | N = {args.n:,} | target | met |")
    print("|---|---|---|---|")
    for label, value, target, met in rows:
        shown = "" if met is None else ("yes" if met else "no")
        print(f"| {label} | {value} | {target} | {shown} |")
    if args.json_out:
        raw = {"n": args.n, "initialize_s": inits, "bare_initialize_s": floor, **warm,
               "cli": cli}
        args.json_out.write_text(json.dumps(raw, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
