"""The daemon's heartbeat: a small JSON file beside the database.

It lives outside the database on purpose: while the database cannot be
written (disk full, locked, read-only) `pipelined status` must still be able
to say that the daemon is alive but degraded. For the same reason it is
rewritten in place in a fixed-size block: overwriting bytes already allocated
needs no free space on a full disk. Only the daemon's main thread writes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pipelined.durable import pwrite_all

__all__ = ["Heartbeat", "heartbeat_path", "read_heartbeat"]

STALE_AFTER_S = 10.0  # a heartbeat older than this means the daemon is not responding
BLOCK = 4096


def heartbeat_path(db_path: Path) -> Path:
    return db_path.parent / (db_path.name + ".heartbeat")  # with_name() raises on "." or "/"


class Heartbeat:
    """Owned by the daemon's main thread; `beat()` never raises."""

    def __init__(self, db_path: Path) -> None:
        self.path = heartbeat_path(db_path)
        self._fd: int | None = None

    def beat(self, info: dict[str, Any]) -> None:
        data = json.dumps({**info, "heartbeat_unix": time.time()}).encode()
        if len(data) >= BLOCK:
            data = json.dumps({"pid": info.get("pid"), "heartbeat_unix": time.time(),
                               "degraded": info.get("degraded"), "ready": info.get("ready"),
                               "folder_problems": [str(p)[:200] for p in
                                                   info.get("folder_problems", [])[:5]],
                               }).encode()
        try:
            if self._fd is not None and not self._still_at_path(self._fd):
                self.close()  # deleted or replaced: `status` reads the path, not our inode
            if self._fd is None:
                # Not through a symbolic link: the rewrite would clobber its target.
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                os.ftruncate(self._fd, BLOCK)
            pwrite_all(self._fd, data.ljust(BLOCK), 0)  # a pwrite may be short
        except OSError:
            pass  # advisory: status then reports the heartbeat as stale

    def _still_at_path(self, fd: int) -> bool:
        try:
            at_path = os.lstat(self.path)
        except OSError:
            return False
        mine = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_heartbeat(db_path: Path) -> dict[str, Any] | None:
    """The last heartbeat, with `age_s` added, or None if there is none."""
    for _attempt in range(3):  # a read racing the in-place rewrite is retried
        try:
            text = heartbeat_path(db_path).read_bytes().strip()
            info: dict[str, Any] = json.loads(text)
        except OSError:
            return None
        except ValueError:
            time.sleep(0.01)
            continue
        info["age_s"] = round(max(0.0, time.time() - float(info.get("heartbeat_unix", 0))), 1)
        return info
    return None
