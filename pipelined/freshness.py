"""How fresh the database is: whether a daemon holds it, in what state, the last sync.

`pipelined status`, the MCP tools and the HTTP API report the same thing, so a
reader always knows whether what it reads may be old: with no daemon running
(`stopped`) or one not `ready`, the rows are what the last sync left. Light to
import: the lock, the heartbeat and two queries.
"""

from __future__ import annotations

import os
import time

from pipelined.store import queries
from pipelined.store.heartbeat import STALE_AFTER_S, read_heartbeat
from pipelined.store.lock import holder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from _typeshed import StrPath

__all__ = ["daemon_state", "freshness", "pipeline_status"]


def daemon_state(pid: int | None, beat: dict[str, Any] | None,
                 stale_after_s: float = STALE_AFTER_S) -> str:
    """stopped, starting, ready, degraded or not responding (from the heartbeat)."""
    if pid is None:
        return "stopped"
    if beat is None:
        return "starting"
    if beat["age_s"] > stale_after_s:
        return "not responding"
    if beat.get("degraded"):
        return "degraded"
    return "ready" if beat.get("ready") else "starting"


def _daemon(db_path: StrPath) -> tuple[int | None, dict[str, Any] | None]:
    pid = holder(db_path)
    beat = read_heartbeat(db_path) if pid is not None else None
    if beat is not None and beat.get("pid") != pid:
        beat = None  # left by an earlier daemon
    return pid, beat


def freshness(db_path: StrPath, conn: Any) -> dict[str, Any]:
    """`{"state", "last_sync", "note"?}`: the note says why the data may be old."""
    pid, beat = _daemon(db_path)
    state = daemon_state(pid, beat)
    info: dict[str, Any] = {"state": state,
                            "last_sync": queries.meta(conn).get("last_sync")}
    if state == "stopped":
        info["note"] = ("no daemon is running on this database: it shows the folders as of "
                        "the last sync")
    elif state != "ready":
        info["note"] = f"the daemon is {state}: the database may lag behind the folders"
    return info


def pipeline_status(db_path: StrPath, conn: Any) -> dict[str, Any]:
    """What `pipelined status --json` prints."""
    pid, beat = _daemon(db_path)
    counts = queries.counts_by_stage(conn)
    return {
        "db": os.fspath(db_path),
        "running": pid is not None,
        "pid": pid,
        "state": daemon_state(pid, beat),
        "uptime_s": (round(time.time() - beat["started_unix"]) if beat else None),
        "writer_error": beat.get("writer_error") if beat else None,
        "pending_batches": beat.get("pending_batches") if beat else None,
        "stat_pass_owed": beat.get("stat_pass_owed") if beat else None,
        "folder_problems": beat.get("folder_problems", []) if beat else [],
        "log_lines_dropped": beat.get("log_lines_dropped") if beat else None,
        "stories": sum(counts.values()),
        "stages": counts,
        "last_sync": queries.meta(conn).get("last_sync"),
    }
