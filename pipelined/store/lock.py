"""The single-instance lock: one daemon per database.

A POSIX record lock on `<db>.lock`, held for the daemon's life. The kernel
drops it when the process dies (even by SIGKILL), so a stale lock file never
blocks the next start. `holder()` asks the kernel who holds it (F_GETLK)
without taking it, so `status` never races a starting daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct

from pipelined.durable import write_all
from pipelined.errors import DatabaseBusy, DatabaseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _typeshed import StrPath

__all__ = ["DaemonLock", "holder", "lock_path"]

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (native alignment, padded to 8 bytes).
_FLOCK = "hhqqixxxx"


def lock_path(db_path: StrPath) -> str:
    return os.fspath(db_path) + ".lock"


def holder(db_path: StrPath) -> int | None:
    """The pid of the daemon holding the database's lock, or None."""
    path = lock_path(db_path)
    try:  # a FIFO put there must not block `status`; a symlink is not ours
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        l_type, _whence, _start, _len, pid = struct.unpack(_FLOCK, answer)
        return int(pid) if l_type != fcntl.F_UNLCK else None
    except OSError:
        return None
    finally:
        os.close(fd)


class DaemonLock:
    """Held while the daemon runs; `acquire()` raises DatabaseBusy if taken."""

    def __init__(self, db_path: StrPath) -> None:
        self.db_path = db_path
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            # Never through a symbolic link: the pid written below would
            # overwrite whatever it points to (see store.preflight).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise DatabaseError(self.db_path, f"cannot create lock file ({exc})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DatabaseError(self.db_path, f"{self.path} is not a plain file; move it away")
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DatabaseBusy(self.db_path, holder(self.db_path)) from None
        self._fd = fd
        self._write_pid(fd)

    @staticmethod
    def _write_pid(fd: int) -> None:
        """The pid, for people reading the file; all of it or nothing.

        Only the kernel's lock matters (`holder()` asks the kernel), so a disk
        too full for these few bytes must not stop the daemon; but a cut pid
        would name the wrong process, so a failed write leaves the file empty.
        """
        try:
            os.ftruncate(fd, 0)
            write_all(fd, f"{os.getpid()}\n".encode())
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # shrinking needs no space

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
