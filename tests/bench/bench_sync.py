"""Benchmark of pipelined's sync and read commands at several sizes, beside a baseline.

Run from the project root with pipelined installed (pytest does not collect it):

    python tests/bench/bench_sync.py [--n 1000,10000,100000] [--rounds-edit 50]
                                     [--git-changes 2000] [--burst 0] [--keep DIR]
                                     [--json-out FILE]

For each N it writes N synthetic ~2 KB stories (every field) into 1_backlog/,
2_current/ and 4_merge/ of a folder of its own, then measures, against the
real daemon as a subprocess (the `pipelined` console script beside this
interpreter, as systemd starts it, else `python -m pipelined`; readiness taken from
sd_notify READY=1 on a datagram socket this script binds as NOTIFY_SOCKET):

1. first import (Popen -> READY=1), and until its search index is built (right
   after READY, in slices); one lone edit right after READY (while the index is
   built), the daemon's RSS once it is built, one lone edit right after that,
   and the RSS and VmHWM once the daemon is idle (its `daemon.heap_trimmed`
   line); the database size (db + wal);
2. edit -> row visible, once idle: spaced single edits of a story's `name:`, polled in
   the database through a read-only apsw connection every 2 ms; then, as the
   baseline, the same after a restart with the whole settle window for every
   change (PIPELINED_SETTLE_QUICK_MS=100, as before the quick path);
3. `pipelined ls --json`, `ls`, `ls --stage 2_current`, `show ID`, `status` and
   `search` wall time, interpreter start included (median of 5, daemon running;
   `ls --json` must list N stories), beside their floors: `python -c pass`, and
   apsw alone printing the rows `ls --json` prints (as JSON lines, same order) or
   the row `show` prints; the peak RSS of `ls --json` (its output read as fast
   as it comes);
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
   seconds until every row is there;
9. with --backlog BIN (npm package `backlog.md`), at each N up to 10,000: the
   same stories as Backlog.md tasks, and its `task list`, `task view`,
   `search` and an edit shown by `task view`, beside ours in a second table.

Before each timed start (daemon or baseline) it calls sync(2), so the kernel's
writeback of earlier writes does not land inside a timed run.

A failed check (a daemon error, missing rows, a CLI exit code) stops the run
with an error and leaves that N's folder in place. It prints the machine, the
command line and one markdown table: a row per measure, a column per N, the
issue's target and whether it is met for the Ns it applies to; then, per N,
the `daemon.startup` lines and every daemon log line above info. --json-out
FILE writes every raw number. --keep DIR works in DIR/n<N> and keeps it
(daemon logs in DIR/n<N>/logs); otherwise each N's folder is deleted after it.

The measures are here; the daemon, the notify socket, the stories and the other
infrastructure are in harness.py beside this file, the table in report.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw
from harness import (
    CLI_RUNS,
    EDIT_SPACING_S,
    EDIT_TIMEOUT_S,
    NO_BYTECODE,
    POLL_S,
    READY_TIMEOUT_S,
    RESTART_ROUNDS,
    STAGES,
    Daemon,
    Notify,
    OpenCounter,
    Result,
    backlog_project,
    check_open_counter,
    check_rows,
    count_crdt_updates,
    db_mib,
    drain_opens,
    flush_writes,
    git,
    json_list_of,
    make_stories,
    mentions,
    peak_rss_mib,
    percentile,
    pipelined_command,
    rewrite_offline,
    time_cli,
    time_command,
    wait_settled,
    watch_opens,
    with_name,
)
from report import machine, report, write_json

BASELINE = """
import glob, os, frontmatter
n = 0
for stage in {stages!r}:
    for path in glob.glob(os.path.join({root!r}, stage, '*.md')):
        frontmatter.load(path)
        n += 1
print(n)
"""


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


def measure_restarts(daemon: Daemon, paths: dict[str, Path]) -> Result:
    """Unchanged restarts to READY and to the state loaded while watchdog collects *.md
    opens; the daemon's memory once the state is loaded. The daemon must be stopped."""
    restarts, loaded, rss, hwm, counter = [], [], [], [], OpenCounter()
    probes = list({path.parent.name: path for path in paths.values()}.values())  # one a stage
    for k in range(RESTART_ROUNDS):
        observer = watch_opens(daemon.root, counter)
        try:
            if k == 0:
                check_open_counter(counter, next(iter(paths.values())))
            flush_writes()
            restarts.append(daemon.start())
            loaded.append(daemon.wait_state_loaded())
            drain_opens(counter, probes)  # every open the restart made is counted now
            rss_now, hwm_now = daemon.rss_mib()
            rss.append(rss_now)
            hwm.append(hwm_now)
        finally:
            observer.stop()
            observer.join(10)
        daemon.stop()
    return {"restart_s": restarts, "restart_loaded_s": loaded, "opened": counter.opened,
            "rss_restart_mib": rss, "hwm_restart_mib": hwm}


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


BACKLOG_MAX_N = 10_000  # Backlog.md takes seconds per command there already
SEARCH_WORDS = "pipeline retry"  # two words of the vocabulary: many hits, both must match


# The floors the commands are measured against, in a fresh interpreter each: Python's
# own start; apsw printing the rows `ls --json` prints (same columns, same order, one
# JSON object per line); apsw printing the one row `show` prints.
PYTHON_START = "pass"
LS_JSON_FLOOR = """
import apsw, json, sys
conn = apsw.Connection({db!r}, flags=apsw.SQLITE_OPEN_READONLY)
cursor = conn.execute({sql!r})
names = [d[0] for d in cursor.getdescription()]
write = sys.stdout.write
for row in cursor:
    write(json.dumps(dict(zip(names, row)), ensure_ascii=False) + "\\n")
"""
SHOW_FLOOR = """
import apsw, sys
conn = apsw.Connection({db!r}, flags=apsw.SQLITE_OPEN_READONLY)
row = conn.execute("SELECT * FROM pipeline_items WHERE id = ?", ({story_id!r},)).fetchone()
sys.stdout.write("\\n".join(map(str, row)) + "\\n")
"""


def measure_cli(daemon: Daemon, n: int, story_id: str) -> Result:
    """`ls --json`, `ls`, `ls --stage 2_current`, `show ID`, `status` and `search`, the
    daemon running; beside them Python's start and the apsw floors; the peak RSS of
    `ls --json`."""
    from pipelined.schema import ITEM_COLUMNS
    from pipelined.store.queries import STAGE_NUMBER_SQL, STORY_NUMBER_SQL

    where = ["--db", str(daemon.db), "--root", str(daemon.root)]
    ls_sql = (f"SELECT {', '.join(ITEM_COLUMNS)} FROM pipeline_items ORDER BY "
              f"{STAGE_NUMBER_SQL}, stage, {STORY_NUMBER_SQL}, id")
    py = [sys.executable, "-c"]
    return {
        "cli_ls_json_s": time_cli(["ls", *where, "--json"], json_list_of(n)),
        "cli_ls_s": time_cli(["ls", *where], lambda _: None),
        "cli_ls_stage_s": time_cli(["ls", *where, "--stage", "2_current"], lambda _: None),
        "cli_show_s": time_cli(["show", *where, story_id], mentions(story_id)),
        "cli_status_s": time_cli(["status", *where], mentions(f"stories:   {n}")),
        "cli_search_s": time_cli(["search", *where, SEARCH_WORDS], lambda _: None),
        "cli_show_id": story_id,
        "python_start_s": time_command([*py, PYTHON_START], lambda _: None),
        "floor_ls_json_s": time_command(
            [*py, LS_JSON_FLOOR.format(db=str(daemon.db), sql=ls_sql)], lambda _: None),
        "floor_show_s": time_command(
            [*py, SHOW_FLOOR.format(db=str(daemon.db), story_id=story_id)], mentions(story_id)),
        "cli_ls_json_rss_mib": peak_rss_mib([*pipelined_command(), "ls", *where, "--json"]),
    }


def measure_backlog(binary: Path, paths: dict[str, Path], work: Path, story_id: str,
                    rng: random.Random) -> Result:
    """Backlog.md on the same stories (harness.backlog_project): `task list --plain`,
    `task view N --plain`, `search WORDS --plain` (median of CLI_RUNS, interpreter
    start included as for ours), and an edit of a task file until `task view` shows it
    (it has no daemon: that is one read of the files after the save)."""
    tasks = backlog_project(binary, paths, work / "backlog-project")
    project = work / "backlog-project"
    number = int(story_id.split("_", 1)[0])

    def timed(*args: str) -> list[float]:
        times = []
        for _ in range(CLI_RUNS):
            started = time.perf_counter()
            done = subprocess.run([str(binary), *args], cwd=project, capture_output=True,
                                  text=True, timeout=600, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"backlog {' '.join(args)}: {done.stderr[-500:]}")
        return times

    result: Result = {
        "backlog_ls_s": timed("task", "list", "--plain"),
        "backlog_show_s": timed("task", "view", str(number), "--plain"),
        "backlog_search_s": timed("search", SEARCH_WORDS, "--plain"),
    }
    edits = []
    for k in range(CLI_RUNS):
        n = rng.choice(sorted(tasks))
        task, title = tasks[n]
        new_title = f"bench edit {k} task {n}"
        task.write_text(task.read_text(encoding="utf-8").replace(
            f"title: '{title}'", f"title: '{new_title}'"), encoding="utf-8")
        tasks[n] = (task, new_title)
        started = time.perf_counter()
        while True:
            done = subprocess.run([str(binary), "task", "view", str(n), "--plain"],
                                  cwd=project, capture_output=True, text=True, timeout=600,
                                  check=False)
            if new_title in done.stdout:
                break
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"backlog never showed the edit of task {n}")
        edits.append(time.perf_counter() - started)
    result["backlog_edit_s"] = edits
    return result


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


def first_import(daemon: Daemon, paths: dict[str, Path], rng: random.Random) -> Result:
    """Popen -> READY=1 on an empty database; one lone edit right after READY, while
    the search index is built; memory and size once the index is built."""
    flush_writes()  # the stories were just written
    first = daemon.start()
    during = measure_edits(daemon, paths, 1, rng)["edit_ms"]
    loaded = daemon.wait_state_loaded()
    searchable = wait_search_built(daemon)
    rss, _hwm = daemon.rss_mib()
    return {"first_s": first, "first_loaded_s": loaded, "first_search_s": searchable,
            "edit_during_build_ms": during[0] if during else None,
            "rss_built_mib": rss, "db_ready_mib": db_mib(daemon.db)}


def after_import(daemon: Daemon, paths: dict[str, Path], rng: random.Random) -> Result:
    """One lone edit right after the search index is built (the writer may still be
    checkpointing the build: the edit waits behind it), then the daemon left until
    it is idle (its `daemon.heap_trimmed` line: the writer has committed everything
    and the freed heap went back); its RSS and VmHWM then."""
    edit = measure_edits(daemon, paths, 1, rng)
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while not any(e.get("event") == "daemon.heap_trimmed" for e in daemon.log_events()):
        if time.perf_counter() > deadline:
            raise RuntimeError("the daemon never went idle after the import\n" + daemon.tail())
        daemon.check_alive("while going idle")
        time.sleep(POLL_S)
    rss, hwm = daemon.rss_mib()
    return {"edit_after_build_ms": edit["edit_ms"][0] if edit["edit_ms"] else None,
            "rss_first_mib": rss, "hwm_first_mib": hwm}


def wait_search_built(daemon: Daemon) -> float:
    """Seconds from Popen until no search index build is owed (a first import of 2,000
    stories or more builds it whole right after READY)."""
    conn = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if conn.execute("SELECT 1 FROM daemon_meta WHERE key = 'search_suspended'"
                            ).fetchone() is None:
                return time.perf_counter() - daemon.started
            daemon.check_alive("while the search index was built")
            time.sleep(POLL_S)
    finally:
        conn.close()
    raise RuntimeError("the search index was never built\n" + daemon.tail())


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
        r |= first_import(daemon, paths, rng)
        r |= after_import(daemon, paths, rng)
        step(n, f"{args.rounds_edit} edits")
        r |= measure_edits(daemon, paths, args.rounds_edit, rng)
        # The baseline in the same run: every change waits the whole settle window,
        # as before the quick path for a lone change (settle_quick_ms = settle_ms).
        step(n, f"{args.rounds_edit} edits, whole settle window (the old way)")
        daemon.stop()
        daemon.start({"PIPELINED_SETTLE_QUICK_MS": "100"})
        daemon.wait_state_loaded()  # not an edit against the load after READY
        whole = measure_edits(daemon, paths, args.rounds_edit, rng)
        r["edit_whole_ms"], r["edit_whole_timeouts"] = whole["edit_ms"], whole["edit_timeouts"]
        daemon.stop()
        daemon.start()
        step(n, "CLI wall times")
        shown = rng.choice(sorted(paths))
        r |= measure_cli(daemon, n, shown)
        if args.backlog and n <= BACKLOG_MAX_N:
            step(n, "Backlog.md beside it")
            r |= measure_backlog(Path(args.backlog), paths, work, shown, rng)
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
    r["edit_whole_p50_ms"] = percentile(r["edit_whole_ms"], 50)
    r["edit_whole_p99_ms"] = percentile(r["edit_whole_ms"], 99)
    for key in ("restart_s", "restart_loaded_s", "changed_restart_s", "changed_loaded_s",
                "baseline_s", "cli_ls_json_s", "cli_ls_s", "cli_ls_stage_s", "cli_show_s",
                "cli_search_s", "cli_status_s", "python_start_s", "floor_ls_json_s",
                "floor_show_s", "rss_restart_mib", "backlog_ls_s", "backlog_show_s",
                "backlog_search_s", "backlog_edit_s"):
        if key in r:
            r[f"{key}_median"] = med(r[key])
    r["hwm_restart_mib_max"] = max(r["hwm_restart_mib"])
    r["opened_count"] = len(r["opened"])
    r["ratio_unchanged"] = r["baseline_s_median"] / r["restart_s_median"]
    r["ratio_changed"] = r["baseline_s_median"] / r["changed_restart_s_median"]
    r["ratio_ls_json_floor"] = r["cli_ls_json_s_median"] / r["floor_ls_json_s_median"]
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
    parser.add_argument("--backlog", metavar="BIN",
                        help="Backlog.md's binary (npm package backlog.md): measured beside "
                             f"pipelined at each N up to {BACKLOG_MAX_N:,}")
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
