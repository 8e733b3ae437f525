"""The settings that shape what is stored for a file, and what a change of them makes stale.

The parse rules (their version, `PARSER_VERSION`) and the size limit decide a row's
fields, content and errors; a row made under other values is stale though its
file did not change. They are recorded in `daemon_meta.stored_with` by every
import (the daemon's, `rebuild`'s) and compared at each start. Pure: no
filesystem, no database.
"""

from __future__ import annotations

import json

from pipelined.layout import split_rel_path

__all__ = ["PARSER_VERSION", "reread_for_settings", "stored_with_settings"]

# Bump whenever a change of the parse rules (`pipelined.story`) changes what is
# stored for the same file (fields, extra keys, errors): the daemon stores this
# number and re-reads every story file when it differs.
# 2: strict field types, duplicate keys are errors.
# 3: each error is {"code", "message"} (schema.ERROR_CODES).
PARSER_VERSION = 3


def stored_with_settings(max_file_bytes: int) -> str:
    """The value recorded in `daemon_meta.stored_with` (JSON, keys sorted)."""
    return json.dumps({"max_file_bytes": max_file_bytes, "parser_version": PARSER_VERSION},
                      sort_keys=True)


def reread_for_settings(before: str | None, now: str,
                        by_path: dict[str, tuple[int, int, int]]) -> set[str]:
    """Ids whose rows the change of settings from `before` to `now` makes stale.

    Another parser version (or none recorded: a database older than the
    record) affects every story; another size limit only the files larger
    than the smaller of the two limits.
    """
    every = {split_rel_path(path)[1] for path in by_path}
    try:
        old = json.loads(before) if before is not None else None
    except ValueError:
        old = None
    new = json.loads(now)
    if not isinstance(old, dict) or old.get("parser_version") != new["parser_version"]:
        return every
    old_limit = old.get("max_file_bytes")
    if not isinstance(old_limit, int):
        return every
    smaller = min(old_limit, new["max_file_bytes"])
    return {split_rel_path(path)[1] for path, (_mtime, size, _inode) in by_path.items()
            if size > smaller}
