"""Losing the log stream (issue 11, item 6): the sync goes on, a failure still exits non-zero.

Under systemd the daemon's stdout and stderr are one stream socket to
journald; when journald restarts, that socket has no reader any more and every
write fails with EPIPE. The daemon must go on syncing (its log lines are
dropped), stop with exit 0 on SIGTERM, and still exit non-zero when it fails,
so that `Restart=on-failure` brings it back. A closed pipe is a clean end only
for a read command's stdout (`pipelined ls | head`).
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, wait_until

from pipelined.config import resolve
from pipelined.logs import LineSink, configure_logging
from pipelined.maintenance import rebuild

pytestmark = pytest.mark.e2e  # the real daemon as a subprocess


class PipedDaemon(DaemonProcess):
    """The daemon with stdout and stderr on one pipe whose read end the test closes,
    as journald's stream socket loses its reader."""

    def spawn(self, *extra_args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self._close()
        self._starts += 1
        sock_path = self.workdir / f"notify-{self._starts}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(sock_path))
        self.messages = []
        full_env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "PIPELINED_LOG_LEVEL": "debug"}
        full_env.pop("PIPELINED_CONFIG", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [self.python, "-m", "pipelined", "run", "--root", str(self.root), "--db",
             str(self.db), "--log-format", "json", *extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, cwd=self.workdir,
        )
        return self.proc

    def lose_the_reader(self, once_logged: bytes = b"daemon.ready") -> None:
        """Read the log pipe until `once_logged` shows the logs flow, then close its read end."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        logged = b""
        deadline = time.monotonic() + DEADLINE_S
        while once_logged not in logged:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {once_logged!r} logged within {DEADLINE_S}s: {logged[-2000:]!r}")
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(f"the daemon closed its output: {logged[-2000:]!r}")
                logged += chunk
        self.proc.stdout.close()


@pytest.fixture
def piped(stories: Stories, tmp_path: Path) -> Iterator[PipedDaemon]:
    proc = PipedDaemon(stories.root, tmp_path / "state" / "pipeline.db", tmp_path)
    yield proc
    proc.kill()


class TestDaemonWithoutItsLogReader:
    def test_edits_keep_landing_and_sigterm_exits_0(self, stories: Stories,
                                                     piped: PipedDaemon) -> None:
        """With the log pipe's reader gone, creates, edits, moves and deletes still reach
        the database; SIGTERM then stops the daemon with exit 0 after STOPPING=1."""
        stories.write("1_backlog", "1_story_a", name="First")
        piped.start()
        piped.lose_the_reader()
        stories.write("1_backlog", "1_story_a", name="Second")  # logs story.updated: EPIPE
        piped.wait_row("1_story_a", lambda r: r["name"] == "Second")
        stories.write("2_current", "2_story_b", name="New")
        piped.wait_row("2_story_b")
        stories.move("1_story_a", "1_backlog", "4_merge")
        piped.wait_row("1_story_a", lambda r: r["stage"] == "4_merge")
        stories.path("2_current", "2_story_b").unlink()
        piped.wait_gone("2_story_b")
        assert piped.proc is not None and piped.proc.poll() is None
        status = wait_until(lambda: (s := json.loads(piped.cli("status", "--json",
                                                                 check=True).stdout))
                            ["log_lines_dropped"] and s, what="dropped lines in status")
        assert status["log_lines_dropped"] >= 1
        assert piped.stop() == 0
        assert any("STOPPING=1" in m for m in piped.messages)

    def test_a_failure_still_exits_non_zero(self, stories: Stories,
                                            piped: PipedDaemon) -> None:
        """A daemon that must stop (its database file was deleted) exits 1 even though
        neither its log lines nor its `Error:` line can be written."""
        stories.write("1_backlog", "1_story_a", name="First")
        piped.start()
        piped.lose_the_reader()
        stories.write("1_backlog", "1_story_a", name="Second")
        piped.wait_row("1_story_a", lambda r: r["name"] == "Second")
        piped.db.unlink()
        assert piped.proc is not None
        assert piped.proc.wait(DEADLINE_S) == 1


def closed_pipe() -> int:
    """The write end of a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def cli_with_closed(stream: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`pipelined ARGS` with its stdout or stderr on a pipe nobody reads."""
    fd = closed_pipe()
    try:
        return subprocess.run([sys.executable, "-m", "pipelined", *args],
                              stdout=fd if stream == "stdout" else subprocess.PIPE,
                              stderr=fd if stream == "stderr" else subprocess.PIPE,
                              timeout=DEADLINE_S, check=False)
    finally:
        os.close(fd)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[list[str]]:
    """`--root` and `--db` of a database built from one story."""
    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "1_story_a", name="First")
    db = tmp_path / "pipeline.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    yield ["--root", str(stories.root), "--db", str(db)]
    configure_logging()  # rebuild's log lines went to this test's stderr


class TestBrokenPipeRule:
    @pytest.mark.parametrize("args", [("ls",), ("log", "--json"), ("events", "--since", "0")],
                             ids=lambda a: a[0])
    def test_a_read_commands_closed_stdout_is_a_clean_end(self, settings: list[str],
                                                          args: tuple[str]) -> None:
        """`pipelined ls | head`: stdout's reader gone is exit 0, no noise on stderr."""
        result = cli_with_closed("stdout", *args, *settings)
        assert result.returncode == 0
        assert b"Error" not in result.stderr and b"Exception" not in result.stderr

    def test_an_errors_exit_code_survives_a_closed_stderr(self, tmp_path: Path) -> None:
        """A bad setting exits 2 even when its `Error:` line cannot be written."""
        result = cli_with_closed("stderr", "ls", "--config", str(tmp_path / "missing.toml"))
        assert result.returncode == 2

    def test_a_closed_stderr_is_no_clean_end(self, settings: list[str]) -> None:
        """Only stdout's reader going away ends a command cleanly: a failed write to a
        closed stderr (here `search`'s "no match") exits 1, not 0."""
        result = cli_with_closed("stderr", "search", "nothingmatches", *settings)
        assert (result.returncode, result.stdout) == (1, b"")

    @pytest.mark.parametrize(("command", "code"), [("ls", 0), ("run", 1)])
    def test_the_daemon_never_takes_a_broken_pipe_for_a_clean_end(
            self, command: str, code: int) -> None:
        """A broken pipe out of `run` is a failure (exit 1) even with stdout's reader
        gone; the same out of a read command is `| head` (exit 0)."""
        script = textwrap.dedent(f"""
            import click
            from pipelined.cli import PipelinedGroup

            @click.group(cls=PipelinedGroup)
            def main() -> None:
                pass

            @main.command(name={command!r})
            def command() -> None:
                raise BrokenPipeError(32, "Broken pipe")

            main()
        """)
        fd = closed_pipe()
        try:
            result = subprocess.run([sys.executable, "-c", script, command], stdout=fd,
                                    stderr=subprocess.PIPE, timeout=DEADLINE_S, check=False)
        finally:
            os.close(fd)
        assert result.returncode == code, result.stderr


class TestLineSink:
    def test_a_pipe_without_reader_drops_lines_and_never_raises(self) -> None:
        """EPIPE: the line is dropped and counted, the descriptor then points at
        /dev/null, and later lines are counted without a write."""
        fd = closed_pipe()
        with os.fdopen(fd, "w", buffering=1) as stream:
            sink = LineSink(stream)
            sink.info("story.updated id=1_a")
            sink.error("story.updated id=1_a")
            assert (sink.dropped, sink.lost) == (2, True)
            assert os.path.samefile(f"/proc/self/fd/{fd}", os.devnull)
            stream.write("a later write by anyone succeeds\n")

    def test_a_full_disk_drops_only_that_line(self) -> None:
        """ENOSPC (stderr to a file on a full disk): that line is dropped and counted; the
        stream is kept, as space may come back."""
        with open("/dev/full", "w", buffering=1) as stream:
            sink = LineSink(stream)
            sink.warning("writer.commit_failed")
            assert (sink.dropped, sink.lost) == (1, False)
            assert not os.path.samefile(f"/proc/self/fd/{stream.fileno()}", os.devnull)

    def test_a_closed_stream_drops_the_line(self, tmp_path: Path) -> None:
        """A stream closed under the logger (a test's capture, say) drops the line."""
        stream = (tmp_path / "log").open("w")
        stream.close()
        sink = LineSink(stream)
        sink.info("daemon.ready")
        assert (sink.dropped, sink.lost) == (1, False)
