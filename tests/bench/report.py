"""The table bench_sync.py prints: a Row per measure with its Target, the markdown
rendering, the machine line, each N's `daemon.startup` and warning lines, and the JSON
file of raw numbers. It formats results; it never runs or measures anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import CLI_RUNS, EDIT_SPACING_S, EDIT_TIMEOUT_S, RESTART_ROUNDS, Result

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


RSS_TARGET = Target("<= 80 at 10,000; <= 400 at 100,000", {10_000: 80, 100_000: 400})
COMMAND_TARGET = Target("<= 0.025 at 10,000", {10_000: 0.025})


def rows(args: argparse.Namespace, results: dict[int, Result]) -> list[Row]:
    git_counts = sorted({r["git_changes"] for r in results.values() if "git_changes" in r})
    git_label = (f"{git_counts[0]:,}" if len(git_counts) == 1 else "min(--git-changes, N/2)")
    return [
        Row("first import (s)", "first_s",
            target=Target("<= 2.5 at 10,000; <= 20 at 100,000", {10_000: 2.5, 100_000: 20})),
        Row("  until its search index is built, after READY (s)", "first_search_s"),
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
            Target(">= 10x at 10,000; >= 20x at 100,000", {10_000: 10, 100_000: 20},
                   at_most=False)),
        Row("ratio baseline/restart, 1% changed (x)", "ratio_changed", ".1f",
            Target(">= 5x", {EVERY_N: 5}, at_most=False)),
        Row("story files opened during unchanged restarts", "opened_count", "d",
            Target("0", {EVERY_N: 0})),
        Row(f"edit->row p50 (ms, {args.rounds_edit} edits {EDIT_SPACING_S} s apart)",
            "edit_p50_ms", ".0f", Target("<= 30", {10_000: 30, 100_000: 30})),
        Row("edit->row p99 (ms)", "edit_p99_ms", ".0f",
            Target("<= 80", {10_000: 80, 100_000: 80})),
        Row("  a lone edit right after the first import's READY, index building (ms)",
            "edit_during_build_ms", ".0f"),
        Row("  a lone edit right after the import's search index is built (ms)",
            "edit_after_build_ms", ".0f"),
        Row("  baseline: edit->row p50 / p99, whole settle window (ms)", "edit_whole_p50_ms",
            ".0f"),
        Row("  baseline p99 (ms)", "edit_whole_p99_ms", ".0f"),
        Row(f"  edits not visible within {EDIT_TIMEOUT_S:.0f} s", "edit_timeouts", "d",
            Target("0", {EVERY_N: 0})),
        Row(f"git checkout of {git_label} changes -> no drift (s)", "git_s",
            target=Target("<= 3", {EVERY_N: 3})),
        Row("  stories the checkout changed", "git_changes", ",d"),
        Row("  pycrdt transactions for that checkout", "git_tx", "d"),
        Row(f"`pipelined ls --json` wall (s, median of {CLI_RUNS})", "cli_ls_json_s_median",
            ".3f"),
        Row(f"  floor: apsw printing the same rows as JSON lines (s, median of {CLI_RUNS})",
            "floor_ls_json_s_median", ".3f"),
        Row("  ratio `ls --json` / floor (x)", "ratio_ls_json_floor", ".2f",
            Target("<= 1.3", {EVERY_N: 1.3})),
        Row("  `ls --json` peak RSS (MiB)", "cli_ls_json_rss_mib", ".0f",
            Target("<= 40 at 100,000", {100_000: 40})),
        Row(f"`pipelined ls --stage 2_current` wall (s, median of {CLI_RUNS})",
            "cli_ls_stage_s_median", ".3f", COMMAND_TARGET),
        Row(f"`pipelined show ID` wall (s, median of {CLI_RUNS})", "cli_show_s_median", ".3f",
            COMMAND_TARGET),
        Row(f"`pipelined status` wall (s, median of {CLI_RUNS})", "cli_status_s_median", ".3f",
            COMMAND_TARGET),
        Row(f"  floor: Python's own start, `python -c pass` (s, median of {CLI_RUNS})",
            "python_start_s_median", ".3f"),
        Row(f"  floor: apsw printing the row `show` prints (s, median of {CLI_RUNS})",
            "floor_show_s_median", ".3f"),
        Row("daemon RSS after first import, once idle: heap trimmed (MiB)", "rss_first_mib",
            ".0f", RSS_TARGET),
        Row("  right after its search index is built (MiB)", "rss_built_mib", ".0f"),
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
    beside = backlog_table(results)
    if beside:
        print("Beside Backlog.md (same stories, same machine, same run; median of "
              f"{CLI_RUNS}, process start included on both sides):\n")
        print(markdown(beside))
        print()
    for n, r in results.items():
        print("\n".join(daemon_lines(n, r["events"])))
        if r["opened"]:
            print("  story files opened during unchanged restarts (first 10):", *r["opened"][:10],
                  sep="\n    ")


def backlog_table(results: dict[int, Result]) -> list[list[str]]:
    """pipelined beside Backlog.md for each N measured with --backlog."""
    rows = [["measure", "N", "pipelined", "Backlog.md", "ratio"]]
    for n, r in results.items():
        if "backlog_ls_s_median" not in r:
            continue
        for label, ours, theirs in (
                ("`ls` / `task list` (s)", r["cli_ls_s_median"], r["backlog_ls_s_median"]),
                ("`show` / `task view` (s)", r["cli_show_s_median"], r["backlog_show_s_median"]),
                ("`search` (s)", r["cli_search_s_median"], r["backlog_search_s_median"]),
                ("an edit visible to the next read (s)", r["edit_p50_ms"] / 1000,
                 r["backlog_edit_s_median"])):
            rows.append([label, f"{n:,}", f"{ours:.3f}", f"{theirs:.3f}",
                         f"{theirs / ours:.0f}x"])
    return rows if len(rows) > 1 else []


def write_json(path: str, results: dict[int, Result], info: dict[str, str]) -> None:
    raw = {str(n): {k: v for k, v in r.items() if k != "events"} for n, r in results.items()}
    for n, r in results.items():
        raw[str(n)]["startup_events"] = [e for e in r["events"]
                                         if e.get("event") == "daemon.startup"]
    Path(path).write_text(json.dumps({"machine": info, "results": raw}, indent=2,
                                     default=str) + "\n", encoding="utf-8")
