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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

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


def fsync_folder(folder: StrPath) -> None:
    """Make the folder's entries (a new link, a removed name) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def rename_no_replace(source: StrPath, target: StrPath) -> None:
    """Rename `source` to `target`; FileExistsError instead of replacing a file there.

    renameat2(RENAME_NOREPLACE) makes the check and the rename one step: a
    plain rename would silently replace a file of that name made meanwhile
    (by another `move`). Where the kernel or the file system lacks it, the
    name is checked first (a small window, as before).
    """
    import ctypes  # noqa: PLC0415 - only `move` needs it; the daemon imports this module

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        done = renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                         _RENAME_NOREPLACE)
        if done == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(source), None, str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)
