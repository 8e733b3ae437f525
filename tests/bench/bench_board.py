"""Benchmark of `pipelined serve` and its board at N stories, in headless Chromium.

Run from the project root after the test install, with Debian's chromium
(pytest does not collect it):

    python tests/bench/bench_board.py [--n 10000] [--saves 30] [--boards 20]
                                      [--soak-minutes 10] [--json-out FILE]
                                      [--backlog node_modules/backlog.md-linux-x64/backlog]

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

With --backlog BIN (npm package `backlog.md`), the same N stories become
Backlog.md tasks (same titles; the stages map to To Do, In Progress, Done), and
Backlog.md's own browser board (`backlog browser`) is measured in the same
chromium: navigation until the first To Do card's title shows (median of 3),
and a task file's title rewritten on disk until the page shows it (p50, p95).
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
    backlog_project,
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


def backlog_board(binary: Path, paths: dict[str, Path], work: Path, browser: object,
                  saves: int, rng: random.Random) -> dict[str, object]:
    """Backlog.md's browser board on the same stories (see the module doc)."""
    tasks = backlog_project(binary, paths, work / "backlog-project")
    project = work / "backlog-project"
    port = 6400 + rng.randint(0, 500)
    server = subprocess.Popen([str(binary), "browser", "--port", str(port), "--no-open"],
                              cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw: dict[str, object] = {}
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:  # until it answers
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        first_todo = min(n for n, (task, _t) in tasks.items() if "status: To Do" in
                         task.read_text(encoding="utf-8"))
        loads = []
        for _ in range(3):
            page = browser.new_page()  # type: ignore[attr-defined]
            started = time.perf_counter()
            page.goto(url)
            page.get_by_text(tasks[first_todo][1], exact=True).first.wait_for(timeout=120_000)
            loads.append(time.perf_counter() - started)
            page.close()
        raw["interactive_s"] = loads
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(url)
        page.get_by_text(tasks[first_todo][1], exact=True).first.wait_for(timeout=120_000)
        shown = [n for n in sorted(tasks)[:300]
                 if page.get_by_text(tasks[n][1], exact=True).count()][:50]
        times = []
        for k in range(saves):
            n = rng.choice(shown)
            task, title = tasks[n]
            new_title = f"saved {k} task {n}"
            started = time.perf_counter()
            task.write_text(task.read_text(encoding="utf-8").replace(
                f"title: '{title}'", f"title: '{new_title}'"), encoding="utf-8")
            try:
                page.get_by_text(new_title, exact=True).first.wait_for(timeout=30_000)
                times.append(time.perf_counter() - started)
            except Exception:  # not shown within 30 s counts as 30 s
                times.append(30.0)
            tasks[n] = (task, new_title)
            time.sleep(0.3)
        raw["save_to_board_s"] = times
    finally:
        server.terminate()
        server.wait(30)
    return raw


def print_beside(n: int, interactive: float, saves_s: list[float],
                 theirs: dict[str, list[float]]) -> None:
    """Our board's two browser numbers beside Backlog.md's, in one table."""
    them_loaded = statistics.median(theirs["interactive_s"])
    them_saves = theirs["save_to_board_s"]
    ours95, theirs95 = percentile(saves_s, 95), percentile(them_saves, 95)
    print()
    print(f"Beside Backlog.md's browser board (same {n:,} stories, same chromium):")
    print("| measure | pipelined | Backlog.md | ratio |")
    print("|---|---|---|---|")
    print(f"| board shows its cards after navigation (s, median) | {interactive:.2f} | "
          f"{them_loaded:.2f} | {them_loaded / interactive:.0f}x |")
    print(f"| file save -> open board shows it, p50 / p95 (ms) | "
          f"{percentile(saves_s, 50) * 1000:.0f} / {ours95 * 1000:.0f} | "
          f"{percentile(them_saves, 50) * 1000:.0f} / {theirs95 * 1000:.0f} | "
          f"{theirs95 / ours95:.0f}x (p95) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--saves", type=int, default=30)
    parser.add_argument("--boards", type=int, default=20)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--backlog", type=Path, default=None,
                        help="Backlog.md's binary: measure its browser board beside ours")
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
            raw["backlog"] = args.backlog and backlog_board(
                args.backlog, paths, work, browser, min(args.saves, 10), rng)
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
    if raw["backlog"]:
        print_beside(args.n, interactive, saves_s, raw["backlog"])  # type: ignore[arg-type]
    if args.json_out:
        args.json_out.write_text(json.dumps(raw, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
