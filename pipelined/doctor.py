"""`pipelined doctor`: database vs pipeline state vs folders.

Reads the database read-only, rebuilds the pipeline state from the persisted
pycrdt updates in a throw-away document, and stats the stage folders. Never
writes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw

from pipelined.layout import split_rel_path, stat_signatures
from pipelined.schema import REFS_FIELDS
from pipelined.state import PipelineState
from pipelined.store import queries
from pipelined.store.load import iter_updates, read_signatures

__all__ = ["diagnose"]


def _state_from_db(conn: apsw.Connection) -> dict[str, dict[str, Any]]:
    state = PipelineState(client_id=1)
    state.load(iter_updates(conn))  # as the daemon's start-up loads it
    return state.to_dict()


def diagnose(conn: apsw.Connection, root: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    """Every problem found, grouped; `ok` is False when any group is not empty.

    `root` is the checked root (`layout.check_root`): a missing root or stage
    folder is an error for the caller to report, never an empty folder that
    would make every story look deleted or, skipped, make "ok" a lie.

    All reads happen in one read transaction: while the daemon commits, the
    rows and the pycrdt updates must come from the same snapshot.
    """
    with queries.snapshot(conn):
        return _diagnose(conn, root, stages)


def _diagnose(conn: apsw.Connection, root: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    rows = queries.story_rows(conn)
    state = _state_from_db(conn)
    mismatch: list[dict[str, str]] = []
    for story_id in sorted(set(rows) | set(state)):
        row, doc = rows.get(story_id), state.get(story_id)
        if row is None:
            mismatch.append({"id": story_id, "problem": "in the pipeline state, no row"})
            continue
        if doc is None:
            mismatch.append({"id": story_id, "problem": "row not in the pipeline state"})
            continue
        for key, doc_value in doc.items():
            row_value, value = row.get(key), doc_value
            if key in REFS_FIELDS:  # the row reads as a list, the state holds JSON text
                value = json.loads(doc_value) if doc_value else None
            if row_value != value:
                mismatch.append({"id": story_id,
                                 "problem": f"{key}: row has {row_value!r}, state {value!r}"})
    report = {
        "conflicts": queries.conflicts(conn),
        "parse_errors": queries.parse_errors(conn),
        "drift": _drift(conn, root, stages, rows),
        "state_mismatch": mismatch,
        "stories": len(rows),
    }
    report["ok"] = not any(report[k] for k in ("conflicts", "parse_errors", "drift",
                                                "state_mismatch"))
    return report


def _drift(conn: apsw.Connection, root: Path, stages: tuple[str, ...],
           rows: dict[str, Any]) -> list[dict[str, str]]:
    """The folders against the stored signatures: the daemon's own stat pass and
    comparison (docs/design.md, rule 5). A stage folder that cannot be read is one problem, and
    its stories are not reported missing (unreadable is not empty)."""
    stored = read_signatures(conn).by_path
    unlistable: dict[str, str] = {}
    seen = stat_signatures(root, stages, unlistable)
    drift = [{"path": f"{stage}/", "problem": f"stage folder cannot be read ({why})"}
             for stage, why in sorted(unlistable.items())]
    for path, signature in sorted(seen.items()):
        record = stored.get(path)
        if record is None:
            drift.append({"path": path, "problem": "file not in the database"})
        elif record != signature:
            drift.append({"path": path, "problem": "file changed since the last sync"})
    hidden = {p for p in stored if split_rel_path(p)[0] in unlistable}
    drift.extend({"path": path, "problem": "in the database, no such file"}
                 for path in sorted(set(stored) - set(seen) - hidden))
    with_files = {split_rel_path(p)[1] for p in set(seen) | hidden if p in stored}
    drift.extend({"path": story_id, "problem": "story has no file"}
                 for story_id in sorted(set(rows) - with_files) if rows[story_id])
    return drift

