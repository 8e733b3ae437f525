"""Reading a small file that must be a regular file: the database's header, the
heartbeat. Opened non-blocking and checked on the descriptor, so a FIFO or a
device renamed in never hangs the reader.

Imports only `os`, `stat` and `errno`: the read commands' start reads the heartbeat.
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

__all__ = ["NotRegularFile", "read_regular_file"]

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class NotRegularFile(OSError):
    """`read_regular_file` found something else than a regular file (`mode` says what)."""

    def __init__(self, path: StrPath, mode: int) -> None:
        super().__init__(errno.EINVAL, "not a regular file", os.fspath(path))
        self.mode = mode


def read_regular_file(path: StrPath, limit: int, *, follow_symlinks: bool = True) -> bytes:
    """At most `limit` bytes of the regular file at `path`.

    Opened non-blocking and checked on the descriptor, never on the path: a
    named pipe renamed in after a check must not hang the reader (the apply
    thread, `status`, the start-up check). NotRegularFile for anything else,
    OSError when it cannot be opened or read.
    """
    flags = _READ_FLAGS | (0 if follow_symlinks else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        return os.read(fd, limit)
    finally:
        os.close(fd)
