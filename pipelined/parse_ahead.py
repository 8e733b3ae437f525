"""A big catch-up's files parsed ahead in a second process (docs/design.md, "Parsing ahead").

A first import or a big offline change parses thousands of files on the apply
thread, under the GIL it shares with the writer: about 40% of that thread's
work. `ParseAhead` starts one worker process (`python -m pipelined.parse_ahead`)
that reads and parses the files of the chunks to come while the apply thread
applies the current one, on the machine's other core.

The worker is only ever a shortcut. The apply thread still opens and reads
every file itself, with all its checks (inside the root, a regular file, the
size limit), and takes the worker's result only for the very same bytes (a
digest of them): `parse_story` is pure, so the same bytes give the same story.
A file changed between the two reads, one the worker could not read, a worker
that failed or is too slow: the apply thread parses the file itself, and the
worker is stopped. Nothing it does can change what is stored.

Protocol (pickles over the worker's stdin and stdout): one request, the root,
the stage folders and the chunks of ids; then one answer per chunk, in order,
`{path: (digest, ParsedStory)}` for each candidate file it could read, each
after its length (8 bytes, little-endian). The reader thread only reads the
bytes; the apply thread unpickles them, so the stories are allocated where a
local parse would have put them (a thread's allocations go to a malloc arena
of its own, which kept 10 MiB more after a first import of 10,000 stories).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from pipelined.layout import read_at_most
from pipelined.logs import get_logger
from pipelined.shaping import PARSER_VERSION
from pipelined.story import ParsedStory, parse_story

__all__ = ["Ahead", "ParseAhead", "digest"]

log = get_logger("pipelined.parse_ahead")

Ahead = dict[str, tuple[bytes, ParsedStory]]  # path -> (digest of its bytes, the story)
TAKE_TIMEOUT_S = 10.0  # a chunk later than this: the apply thread parses alone
READER_JOIN_S = 5.0
LENGTH_BYTES = 8  # before each answer: its length
# What the daemon holds of the worker's answers is bounded whatever max_file_bytes
# allows (1 MiB by default): a file over AHEAD_MAX_FILE_BYTES, or past an answer's
# budget of file bytes, is left to the apply thread. One answer waits in the queue,
# one in the reader thread, one is unpickled: about 4 x ANSWER_BUDGET_BYTES at most.
AHEAD_MAX_FILE_BYTES = 64 * 1024
ANSWER_BUDGET_BYTES = 8 * 1024 * 1024
# An answer's length is checked against this before anything is allocated for it.
MAX_ANSWER_BYTES = 4 * ANSWER_BUDGET_BYTES
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def digest(raw: bytes) -> bytes:
    """What identifies a file's bytes between the two processes."""
    return hashlib.blake2b(raw, digest_size=16).digest()


class ParseAhead:
    """The worker process, fed every chunk at once; `take()` gives the next answer.

    Owned by the thread that calls `take` and `close` (the apply thread); a reader
    thread of its own keeps one answer waiting, so the worker stays a chunk ahead
    without holding the whole import in memory. Whatever the worker sends, or
    fails to, the caller gets an answer or an empty one, never an exception.
    """

    def __init__(self, root: str, stages: Sequence[str], chunks: Sequence[Sequence[str]],
                 max_file_bytes: int) -> None:
        self._answers: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._failed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._expected = len(chunks)
        self.answered = 0  # chunks the worker answered so far
        request = (PARSER_VERSION, root, list(stages), [list(chunk) for chunk in chunks])
        try:
            # -P: not the current folder first on sys.path. The units start the daemon
            # in the stories folder, where a `pickle.py` would otherwise be imported.
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "pipelined.parse_ahead", str(max_file_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self._reader = threading.Thread(target=self._read_answers, args=(request,),
                                            name="pipelined-parse-ahead", daemon=True)
            self._reader.start()
        except (OSError, RuntimeError) as exc:  # no process, or no thread for it
            self._fail(f"cannot start it ({exc})")
            self.close()

    def take(self) -> Ahead:
        """The next chunk's answer; empty once the worker failed (parse locally)."""
        if self._failed:
            return {}
        try:
            answer = self._answers.get(timeout=TAKE_TIMEOUT_S)
        except queue.Empty:
            answer = None
            self._fail(f"no answer in {TAKE_TIMEOUT_S:.0f} s")
        if answer is None:
            self.close()
            return {}
        try:
            stories: Ahead = pickle.loads(answer)  # our own child's pickles
            if not isinstance(stories, dict):
                raise TypeError(f"an answer of type {type(stories).__name__}")
        except Exception as exc:  # whatever a broken worker sent: parse locally
            self._fail(f"a bad answer ({type(exc).__name__}: {exc})")
            self.close()
            return {}
        self.answered += 1
        return stories

    def close(self) -> None:
        """Stop the worker (it has nothing left to do, or it failed)."""
        self._failed = True
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()  # a worker holds nothing worth keeping
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        while True:  # unblock the reader thread if it waits for room in the queue
            try:
                self._answers.get_nowait()
            except queue.Empty:
                break
        if self._reader is not None:
            self._reader.join(READER_JOIN_S)  # it stops at its next answer, or at the EOF

    def _fail(self, why: str) -> None:
        if not self._failed:
            self._failed = True
            log.warning("parse_ahead.failed", error=why,
                        action="the apply thread parses the files itself")

    def _read_answers(self, request: Any) -> None:
        """The reader thread: send the request, then queue each answer as it comes."""
        proc = self._proc
        assert proc is not None
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            pickle.dump(request, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.close()
            for _ in range(self._expected):
                size = int.from_bytes(_read_exactly(proc.stdout, LENGTH_BYTES), "little")
                if size > MAX_ANSWER_BYTES:
                    raise ValueError(f"an answer of {size} bytes")
                answer = _read_exactly(proc.stdout, size)
                if self._failed:
                    return
                self._answers.put(answer)
        except Exception as exc:  # any failure: the apply thread goes on alone
            if not self._failed:  # not closed by us
                self._fail(f"{type(exc).__name__}: {exc}")
                self._answers.put(None)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"the worker's answer ended after {len(data)} of {size} bytes")
    return data


# -- the worker process ------------------------------------------------------------


def _read(path: str, limit: int) -> bytes | None:
    """The file's bytes, if it is a regular file (not a symlink) within `limit`; the
    story is parsed with the daemon's own limit all the same."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        raw = read_at_most(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw if len(raw) <= limit else None  # it grew past the limit since the fstat


def serve(limit: int, requests: IO[bytes], answers: IO[bytes]) -> None:
    """The worker: one request in, one answer per chunk out.

    It gives up (exits: the daemon parses alone) when its parser is not the
    daemon's (the package was upgraded under a running daemon), and leaves out a
    story whose parse failed (`parser_failed`: memory, recursion, an import gone
    wrong here may not go wrong there).
    """
    version, root, stages, chunks = pickle.load(requests)  # from our parent
    if version != PARSER_VERSION:
        return
    for chunk in chunks:
        answer: Ahead = {}
        budget = ANSWER_BUDGET_BYTES
        for story_id in chunk:
            for stage in stages:
                path = os.path.join(root, stage, story_id + ".md")
                raw = _read(path, min(limit, AHEAD_MAX_FILE_BYTES, max(0, budget)))
                if raw is None:
                    continue
                story = parse_story(raw, limit)
                if not any(error.code == "parser_failed" for error in story.errors):
                    answer[path] = (digest(raw), story)
                    budget -= len(raw)
        blob = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(len(blob).to_bytes(LENGTH_BYTES, "little"))
        answers.write(blob)
        answers.flush()


if __name__ == "__main__":
    # The daemon's signals are not for the worker: Ctrl-C reaches the whole process
    # group and `systemctl stop` the whole unit, while a first SIGTERM lets the
    # catch-up go on. The daemon kills it when done; a closed pipe ends it too.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    with contextlib.suppress(BrokenPipeError, EOFError):
        serve(int(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)
