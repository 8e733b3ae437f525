"""The daemon's heartbeat: a small JSON file beside the database.

It lives outside the database on purpose: while the database cannot be
written (disk full, locked, read-only) `pipelined status` must still be able
to say that the daemon is alive but degraded. For the same reason it is
rewritten in place in a fixed-size block: overwriting bytes already allocated
needs no free space on a full disk. Only the daemon's main thread writes it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time

from pipelined.durable import pwrite_all
from pipelined.quickjson import loads as json_loads
from pipelined.reading import read_regular_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from _typeshed import StrPath

__all__ = ["Heartbeat", "heartbeat_path", "read_heartbeat"]

STALE_AFTER_S = 10.0  # a heartbeat older than this means the daemon is not responding
BLOCK = 4096


def heartbeat_path(db_path: StrPath) -> str:
    return os.fspath(db_path) + ".heartbeat"


class Heartbeat:
    """Owned by the daemon's main thread; `beat()` never raises."""

    def __init__(self, db_path: StrPath) -> None:
        self.path = heartbeat_path(db_path)
        self._fd: int | None = None

    def beat(self, info: dict[str, Any]) -> None:
        import json  # noqa: PLC0415 - the daemon's; a reader of the heartbeat does without

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
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                             | os.O_CLOEXEC, 0o644)
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO put in its place
                    os.close(fd)
                    return
                self._fd = fd
                os.ftruncate(fd, BLOCK)
                # Its block allocated now: the beats that say the disk is full must fit
                # (a file system without fallocate: they are written as before).
                with contextlib.suppress(OSError):
                    os.posix_fallocate(fd, 0, BLOCK)
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


def _read_block(path: StrPath) -> bytes:
    """The heartbeat's bytes, never through a symlink, a regular file only (a FIFO or
    a link to /dev/zero put there must not hang `status`)."""
    return read_regular_file(path, BLOCK, follow_symlinks=False).strip()


def read_heartbeat(db_path: StrPath) -> dict[str, Any] | None:
    """The last heartbeat, with `age_s` added, or None if there is none."""
    for _attempt in range(3):  # a read racing the in-place rewrite is retried
        try:
            text = _read_block(heartbeat_path(db_path))
            info: dict[str, Any] = json_loads(text)
        except OSError:
            return None
        except ValueError:
            time.sleep(0.01)
            continue
        info["age_s"] = round(max(0.0, time.time() - float(info.get("heartbeat_unix", 0))), 1)
        return info
    return None
