"""Story files swapped under the daemon between its stat and its open.

A stat (or realpath) of a path says nothing about what a later open of the
same path finds: a rename in between can put a named pipe there (an open for
reading would wait for a writer forever) or a symlink to a file outside the
root (its text must never be stored). The reads are checked on the opened
descriptor (`layout.open_story`). The in-process tests build exactly the state
such a race leaves (a stat that saw a regular file, a path that is now
something else), so they do not depend on winning the race.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import STAGES, DaemonProcess, Stories, story_text, wait_until

from pipelined.content import ContentMap
from pipelined.layout import FileSignature, RefusedFile, StageDirs, StoryFile, open_story
from pipelined.state import PipelineState
from pipelined.sync import Reconciler, Tracked, read_story_file

SECRET = "outside-the-root secret 4f1c"


def reconciler_for(stories: Stories) -> Reconciler:
    return Reconciler(stories.root, STAGES, PipelineState(client_id=5), ContentMap(), {},
                      1 << 20)


def as_stat_saw_it(path: Path, story_id: str) -> StoryFile:
    """The StoryFile a stat of a regular file at `path` made, before the swap."""
    return StoryFile(story_id, path.parent.name, str(path), FileSignature(1, 10, 99))


def release_fifo(path: Path) -> None:
    """Open the pipe's write end once, so a reader stuck in open() returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


class TestOpenChecksTheDescriptor:
    def test_fifo_swapped_in_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A named pipe found where the stat saw a story file is no story: the read
        returns at once (as for a vanished file) instead of waiting for a writer."""
        stories = Stories(tmp_path / "root")
        path = stories.path("2_current", "5_story_piped")
        os.mkfifo(path)
        reconciler = reconciler_for(stories)
        outcome: list[object] = []
        record = Tracked(unreadable=True)
        reader = threading.Thread(
            target=lambda: outcome.append(
                reconciler._read(as_stat_saw_it(path, "5_story_piped"), record)),
            daemon=True)
        reader.start()
        try:
            reader.join(10)
            assert not reader.is_alive(), "the read blocked on a named pipe"
            assert outcome == [None]
            assert not record.unreadable
        finally:
            release_fifo(path)

    def test_symlink_out_of_the_root_swapped_in_is_not_read(self, tmp_path: Path) -> None:
        """A symlink to a file outside the root, found where the stat saw a regular
        file, is not read: nothing of the outside file reaches the content map."""
        stories = Stories(tmp_path / "root")
        outside = tmp_path / "outside.md"
        outside.write_text(story_text(name=SECRET), encoding="utf-8")
        path = stories.path("2_current", "6_story_linked")
        path.symlink_to(outside)
        reconciler = reconciler_for(stories)
        assert reconciler._read(as_stat_saw_it(path, "6_story_linked"), Tracked()) is None
        with pytest.raises(RefusedFile, match="a symlink out of the root"):
            read_story_file(str(path), str(stories.root.resolve()), 1000)

    def test_symlink_inside_the_root_is_read(self, tmp_path: Path) -> None:
        """A symlink to a file inside the root is still followed (a documented feature)."""
        stories = Stories(tmp_path / "root")
        target = stories.root / "notes.md"
        target.write_text(story_text(name="kept inside"), encoding="utf-8")
        path = stories.path("1_backlog", "7_story_inside")
        path.symlink_to(target)
        parsed = reconciler_for(stories)._read(as_stat_saw_it(path, "7_story_inside"),
                                              Tracked())
        assert parsed is not None and parsed.fields["name"] == "kept inside"

    def test_socket_swapped_in_is_refused(self, tmp_path: Path) -> None:
        """A unix socket bound at a story's path is no story either (not 'unreadable')."""
        stories = Stories(tmp_path / "root")
        path = stories.path("1_backlog", "8_story_socket")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(str(path))
            reconciler = reconciler_for(stories)
            record = Tracked(unreadable=True)
            assert reconciler._read(as_stat_saw_it(path, "8_story_socket"), record) is None
            assert not record.unreadable
        finally:
            server.close()

    def test_open_story_refuses_a_folder_path_escape(self, tmp_path: Path) -> None:
        """The root check is on the real path of what was opened: a stage folder
        swapped for a symlink to an outside folder does not let its files in."""
        stories = Stories(tmp_path / "root")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "9_story_x.md").write_text(SECRET, encoding="utf-8")
        os.rename(stories.root / "4_merge", tmp_path / "old_merge")
        (stories.root / "4_merge").symlink_to(elsewhere)
        with pytest.raises(RefusedFile):
            open_story(str(stories.root / "4_merge" / "9_story_x.md"),
                       str(stories.root.resolve()))


    def test_stage_folder_swapped_for_a_symlink_out_is_refused(self, tmp_path: Path) -> None:
        """Reads of a batch open the stage folder once and check where it really is: a
        stage folder swapped for a symlink to an outside folder lets nothing in, and is
        an unreadable folder (an OSError: the story kept), not a refused file (which a
        catch-up took for a file gone, and deleted its story)."""
        stories = Stories(tmp_path / "root")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "9_story_x.md").write_text(story_text(name=SECRET), encoding="utf-8")
        os.rename(stories.root / "4_merge", tmp_path / "old_merge")
        (stories.root / "4_merge").symlink_to(elsewhere)
        dirs = StageDirs(str(stories.root.resolve()))
        try:
            with pytest.raises(OSError, match="symlink out of the root"):
                dirs.open("4_merge", "9_story_x")
        finally:
            dirs.close()


class Flipper(threading.Thread):
    """Swaps one story path between a regular file, a named pipe and a symlink out of
    the root, as fast as it can, each by an atomic rename over the path."""

    def __init__(self, stories: Stories, story_id: str, outside: Path) -> None:
        super().__init__(daemon=True)
        self.path = stories.path("2_current", story_id)
        self.outside = outside
        self.text = story_text(name="the real one")
        self.stop = threading.Event()
        self.flips = 0

    def run(self) -> None:
        spare = self.path.with_name(".flip.tmp")  # hidden: the daemon ignores it
        while not self.stop.is_set():
            for kind in ("fifo", "file", "link", "file"):
                spare.unlink(missing_ok=True)
                if kind == "fifo":
                    os.mkfifo(spare)
                elif kind == "link":
                    spare.symlink_to(self.outside)
                else:
                    spare.write_text(self.text, encoding="utf-8")
                os.rename(spare, self.path)
                self.flips += 1
        spare.unlink(missing_ok=True)


class TestDaemonUnderSwaps:
    def test_swaps_neither_hang_nor_leak(self, stories: Stories, daemon: DaemonProcess,
                                         tmp_path: Path) -> None:
        """While a story path flips between a file, a pipe and a symlink out of the
        root, other edits keep landing, the outside file's text is never stored, and
        SIGTERM stops the daemon with exit 0."""
        outside = tmp_path / "outside.md"
        outside.write_text(story_text(name=SECRET), encoding="utf-8")
        daemon.start()
        flipper = Flipper(stories, "30_story_flip", outside)
        flipper.start()
        try:
            started = time.monotonic()
            edits = 0
            while time.monotonic() - started < 3.0:
                edits += 1
                stories.write("1_backlog", "31_story_steady", name=f"edit {edits}")
                daemon.wait_row("31_story_steady", lambda r, n=edits: r["name"] == f"edit {n}",
                                timeout=15)
        finally:
            flipper.stop.set()
            flipper.join(10)
        assert flipper.flips > 100
        stories.write("2_current", "30_story_flip", name="the real one, last")
        daemon.wait_row("30_story_flip", lambda r: r["name"] == "the real one, last")
        for table, column in (("pipeline_items", "content"), ("pipeline_items", "name"),
                              ("story_extras", "extra")):
            leaked = daemon.query(f"SELECT count(*) FROM {table} WHERE {column} LIKE ?",
                                  (f"%{SECRET}%",))
            assert leaked == [(0,)], table
        assert daemon.query("SELECT count(*) FROM pipeline_search WHERE pipeline_search "
                            "MATCH ?", ('"4f1c"',)) == [(0,)]
        updates = b"".join(bytes(r[0]) for r in daemon.query("SELECT data FROM crdt_updates"))
        assert SECRET.encode() not in updates
        assert daemon.stop(signal.SIGTERM, timeout=20) == 0


def test_fifo_left_in_place_is_no_story(stories: Stories, daemon: DaemonProcess) -> None:
    """A named pipe that stays under a story's name is ignored (no row, no hang), and
    the daemon still stops on SIGTERM."""
    daemon.start()
    stories.write("2_current", "40_story_then_pipe", name="first a file")
    daemon.wait_row("40_story_then_pipe")
    spare = stories.root / "2_current" / ".pipe.tmp"
    os.mkfifo(spare)
    os.rename(spare, stories.path("2_current", "40_story_then_pipe"))
    daemon.wait_gone("40_story_then_pipe")
    stories.write("2_current", "41_story_after", name="after")
    daemon.wait_row("41_story_after")
    wait_until(lambda: daemon.proc is not None and daemon.proc.poll() is None)
    assert daemon.stop(signal.SIGTERM, timeout=20) == 0
