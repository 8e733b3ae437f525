"""The heartbeat file `pipelined status` reads, written by the daemon's main thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pipelined.store.heartbeat import Heartbeat, heartbeat_path, read_heartbeat


class TestHeartbeat:
    def test_deleted_heartbeat_is_written_again(self, tmp_path: Path) -> None:
        """A heartbeat file deleted under the daemon is created again at the next beat,
        instead of going on into the unlinked inode while `status` sees none."""
        db = tmp_path / "p.db"
        beat = Heartbeat(db)
        beat.beat({"pid": 1, "ready": True})
        os.unlink(heartbeat_path(db))
        beat.beat({"pid": 2, "ready": True})
        found = read_heartbeat(db)
        assert found is not None and found["pid"] == 2
        beat.close()

    def test_replaced_heartbeat_is_written_at_the_path(self, tmp_path: Path) -> None:
        """A file renamed over the heartbeat is what the next beat rewrites."""
        db = tmp_path / "p.db"
        beat = Heartbeat(db)
        beat.beat({"pid": 1})
        other = tmp_path / "other"
        other.write_text("{}")
        os.rename(other, heartbeat_path(db))
        beat.beat({"pid": 3})
        found = read_heartbeat(db)
        assert found is not None and found["pid"] == 3
        beat.close()

    def test_symlink_put_in_its_place_is_not_written_through(self, tmp_path: Path) -> None:
        """A symlink renamed over the heartbeat is not followed: its target keeps its bytes."""
        db = tmp_path / "p.db"
        beat = Heartbeat(db)
        beat.beat({"pid": 1})
        target = tmp_path / "precious"
        target.write_text("keep me")
        link = tmp_path / "link"
        link.symlink_to(target)
        os.rename(link, heartbeat_path(db))
        beat.beat({"pid": 4})
        assert target.read_text() == "keep me"
        beat.close()

    def test_an_oversized_beat_keeps_the_state(self, tmp_path: Path) -> None:
        """A beat too large for its block keeps pid, ready, degraded and some of the
        folder problems."""
        db = tmp_path / "p.db"
        beat = Heartbeat(db)
        beat.beat({"pid": 5, "ready": True, "degraded": True, "writer_error": "x" * 5000,
                   "folder_problems": ["2_current: cannot be read (Permission denied)"]})
        found = read_heartbeat(db)
        assert found is not None
        assert (found["pid"], found["ready"], found["degraded"]) == (5, True, True)
        assert found["folder_problems"] == ["2_current: cannot be read (Permission denied)"]
        beat.close()

    def test_fifo_in_its_place_hangs_neither_side(self, tmp_path: Path) -> None:
        """A named pipe renamed over the heartbeat: the daemon's beat does not keep it
        open, and reading the heartbeat (`status`) returns at once with nothing."""
        db = tmp_path / "p.db"
        beat = Heartbeat(db)
        beat.beat({"pid": 1})
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        os.rename(fifo, heartbeat_path(db))
        beat.beat({"pid": 6})
        assert beat._fd is None
        done: list[object] = []
        reader = threading.Thread(target=lambda: done.append(read_heartbeat(db)), daemon=True)
        reader.start()
        reader.join(10)
        assert done == [None]
        beat.close()
