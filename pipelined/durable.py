"""Raw writes that either put every byte down or raise.

`os.write` and `os.pwrite` may write fewer bytes than asked and still return
normally: on a nearly full disk, past RLIMIT_FSIZE, after a signal. A caller
that ignores the count reports success for a cut file. These helpers loop
until everything is written and let the error that stops them propagate; what
to do about it (remove the file, report, carry on) is the caller's business.
They never swallow an error.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["fsync_folder", "pwrite_all", "write_all"]


def _nothing_written() -> OSError:
    # A regular file never takes 0 bytes of a non-empty write without an error;
    # looping on it would spin forever.
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` at the descriptor's offset (OSError if it cannot)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise _nothing_written()
        view = view[written:]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of `data` at `offset`, leaving the descriptor's offset alone."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise _nothing_written()
        view = view[written:]
        offset += written


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a new link, a removed name) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
