"""Benchmark of `pipelined serve` and its board at N stories, in headless Chromium.

Run from the project root after the test install, with Debian's chromium
(pytest does not collect it):

    python tests/bench/bench_board.py [--n 10000] [--saves 30] [--boards 20]
                                      [--soak-minutes 10] [--json-out FILE]

It writes N synthetic stories (harness.make_stories), starts the real daemon,
waits for READY, starts `pipelined serve` on a free loopback port, then:

1. board interactive: navigation until the page marks itself ready (every
   column drawn, `body[data-ready]`), median of 5 fresh pages;
2. a file save -> the open board shows it: a story's `name:` rewritten on disk,
   timed until that card's text changes (p50, p95 of --saves saves);
3. `GET /api/stories?limit=50` and `GET /api/stories/{id}` with an HTTP client
   (http.client, one keep-alive connection): p50 of 200 requests each;
4. --boards open boards for --soak-minutes while a story is saved every
   second: the server's RSS before and after, and whether every page shows
   the last save at the end.

It prints one markdown table (measure, value, target, met).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    Daemon,
    Notify,
    child_env,
    make_stories,
    percentile,
    pipelined_command,
    with_name,
)
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(root: Path, db: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([*pipelined_command(), "serve", "--root", str(root), "--db", str(db),
                             "--listen", "127.0.0.1:0"], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"127\.0\.0\.1:(\d+)/", line)
    if match is None:
        raise RuntimeError(line + proc.stderr.read())
    return proc, int(match.group(1))


def http_p50(port: int, path: str, rounds: int = 200) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status}")
    conn.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--boards", type=int, default=20)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    rng = random.Random(11)
    work = Path(tempfile.mkdtemp(prefix="bench-board-"))
    notify = Notify()
    root, db = work / "root", work / "p.db"
    paths = make_stories(root, args.n, rng)
    ids = sorted(paths)
    daemon = Daemon(work, root, db, notify)
    server = None
    raw: dict[str, object] = {"n": args.n}
    try:
        daemon.start()
        daemon.wait_state_loaded()
        server, port = start_server(root, db)
        url = f"http://127.0.0.1:{port}/"
        raw["api_list_p50_s"] = http_p50(port, "/api/stories?limit=50")
        raw["api_story_p50_s"] = http_p50(port, f"/api/stories/{ids[len(ids) // 2]}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            loads = []
            for _ in range(5):
                page = browser.new_page()
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("body[data-ready=true]", timeout=60_000)
                loads.append(time.perf_counter() - started)
                page.close()
            raw["interactive_s"] = loads
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            shown = [i for i in ids if page.locator(f'[data-id="{i}"]').count()]
            saves = []
            for n in range(args.saves):
                story_id = rng.choice(shown)
                name = f"saved {n} {story_id}"
                started = time.perf_counter()
                paths[story_id].write_text(with_name(paths[story_id].read_text(), name))
                page.locator(f'[data-id="{story_id}"]').filter(has_text=name).wait_for(
                    timeout=30_000)
                saves.append(time.perf_counter() - started)
                time.sleep(0.3)
            raw["save_to_board_s"] = saves
            page.close()
            rss_before = rss_mib(server.pid)
            boards = [browser.new_page() for _ in range(args.boards)]
            for board in boards:
                board.goto(url)
                board.wait_for_selector("body[data-ready=true]", timeout=120_000)
            deadline = time.monotonic() + args.soak_minutes * 60
            last = None
            while time.monotonic() < deadline:
                last = rng.choice(shown)
                name = f"soak {time.monotonic():.0f} {last}"
                paths[last].write_text(with_name(paths[last].read_text(), name))
                time.sleep(1.0)
            assert last is not None
            current = 0
            for board in boards:
                try:
                    board.locator(f'[data-id="{last}"]').filter(has_text=name).wait_for(
                        timeout=10_000)
                    current += 1
                except Exception:
                    pass
            raw["rss_before_mib"] = rss_before
            raw["rss_after_mib"] = rss_mib(server.pid)
            raw["boards_current"] = current
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if daemon.running():
            daemon.stop()
        notify.close()
    interactive = statistics.median(raw["interactive_s"])  # type: ignore[arg-type]
    saves_s: list[float] = raw["save_to_board_s"]  # type: ignore[assignment]
    growth = float(raw["rss_after_mib"]) - float(raw["rss_before_mib"])  # type: ignore[arg-type]
    rows = [
        ("board interactive after navigation (s, median of 5)", f"{interactive:.2f}",
         "<= 1.5", interactive <= 1.5),
        ("file save -> open board shows it, p50 / p95 (ms)",
         f"{percentile(saves_s, 50) * 1000:.0f} / {percentile(saves_s, 95) * 1000:.0f}",
         "p95 <= 300", percentile(saves_s, 95) <= 0.3),
        ("`GET /api/stories?limit=50` p50 (ms)", f"{raw['api_list_p50_s'] * 1000:.1f}",
         "<= 10", raw["api_list_p50_s"] <= 0.010),  # type: ignore[operator]
        ("`GET /api/stories/{id}` p50 (ms)", f"{raw['api_story_p50_s'] * 1000:.1f}",
         "<= 5", raw["api_story_p50_s"] <= 0.005),  # type: ignore[operator]
        (f"{args.boards} boards for {args.soak_minutes:g} min: server RSS growth (MiB)",
         f"{growth:.1f} ({float(raw['rss_before_mib']):.0f} -> "  # type: ignore[arg-type]
         f"{float(raw['rss_after_mib']):.0f})", "<= 50", growth <= 50),  # type: ignore[arg-type]
        ("  boards showing the last save at the end", f"{raw['boards_current']} / {args.boards}",
         "all", raw["boards_current"] == args.boards),
    ]
    print(f"N = {args.n:,}; python {sys.version.split()[0]}; chromium headless")
    print(f"| measure | N = {args.n:,} | target | met |")
    print("|---|---|---|---|")
    for label, value, target, met in rows:
        print(f"| {label} | {value} | {target} | {'yes' if met else 'no'} |")
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
