"""Parsing ahead in a worker process (pipelined.parse_ahead): the real worker, real
files, and the Reconciler and Startup that take its answers only for the same bytes."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import STAGES, Stories, story_text

from pipelined import parse_ahead, startup
from pipelined.config import resolve
from pipelined.content import ContentMap
from pipelined.outcome import Outcome
from pipelined.parse_ahead import AHEAD_MAX_FILE_BYTES, ParseAhead, digest, serve
from pipelined.schema import StoryError
from pipelined.shaping import PARSER_VERSION
from pipelined.startup import Startup
from pipelined.state import PipelineState
from pipelined.store.connection import open_writer
from pipelined.store.migrations import apply_migrations
from pipelined.store.writer import Writer
from pipelined.story import ParsedStory, parse_story
from pipelined.sync import Reconciler

LIMIT = 1 << 20


def paths_of(stories: Stories, stage: str, *ids: str) -> list[str]:
    return [os.path.join(stories.root, stage, f"{story_id}.md") for story_id in ids]


class TestTheWorker:
    def test_each_chunk_comes_back_parsed_as_the_parser_would(self, tmp_path: Path) -> None:
        """Answers in chunk order, each file's digest and story equal to parsing it here;
        a missing id, a symlink, a folder named like a story and an oversized file are
        left to the apply thread."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_a", name="a", depends_on=[2])
        stories.write("2_current", "2_b", name="b", body="x" * 1000)
        stories.write("4_merge", "3_c", text="no front matter at all\n")
        stories.write("1_backlog", "4_big", text="---\nname: big\n---\n" + "y" * 3000)
        stories.write("1_backlog", "5_target", name="target")
        os.symlink("5_target.md", stories.path("2_current", "6_link"))
        os.mkdir(stories.path("4_merge", "7_dir"))
        chunks = [["1_a", "2_b"], ["3_c", "4_big", "6_link", "7_dir", "8_missing"]]
        ahead = ParseAhead(str(stories.root), STAGES, chunks, 2048)
        try:
            first, second = ahead.take(), ahead.take()
        finally:
            ahead.close()
        expected = [paths_of(stories, "1_backlog", "1_a") + paths_of(stories, "2_current", "2_b"),
                    paths_of(stories, "4_merge", "3_c")]
        assert [sorted(first), sorted(second)] == [sorted(paths) for paths in expected]
        for path, (got_digest, story) in {**first, **second}.items():
            raw = Path(path).read_bytes()
            assert got_digest == digest(raw)
            assert story == parse_story(raw, 2048)
        assert first[paths_of(stories, "2_current", "2_b")[0]][1].fields["name"] == "b"

    def test_a_file_over_64_kib_is_left_to_the_apply_thread(self, tmp_path: Path) -> None:
        """However much the daemon's limit allows: three answers of 1,000 such files
        would otherwise hold gigabytes."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_small", name="small")
        stories.write("1_backlog", "2_large", name="large", body="z" * AHEAD_MAX_FILE_BYTES)
        ahead = ParseAhead(str(stories.root), STAGES, [["1_small", "2_large"]], LIMIT)
        try:
            answer = ahead.take()
        finally:
            ahead.close()
        assert list(answer) == paths_of(stories, "1_backlog", "1_small")

    def test_a_worker_that_dies_leaves_the_parsing_to_the_caller(
            self, tmp_path: Path, log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """The worker killed before it answered: `take` gives empty answers, says so
        once, and `close` is safe to repeat."""
        stories = Stories(tmp_path / "root")
        for n in range(1, 4):
            stories.write("1_backlog", f"{n}_s", name=f"s {n}")
        ahead = ParseAhead(str(stories.root), STAGES, [["1_s"], ["2_s"], ["3_s"]], LIMIT)
        try:
            proc = ahead._proc
            assert proc is not None
            proc.kill()  # long before its interpreter has started
            proc.wait()
            answers = [ahead.take() for _ in range(3)]
        finally:
            ahead.close()
            ahead.close()
        assert answers == [{}, {}, {}]
        assert ahead.answered == 0
        failed = [e for e in log_events() if e["event"] == "parse_ahead.failed"]
        assert len(failed) == 1 and failed[0]["level"] == "warning", (failed, log_events())

    def test_a_worker_that_cannot_start_is_said_once(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            log_events: Callable[[], list[dict[str, Any]]]) -> None:
        monkeypatch.setattr("sys.executable", str(tmp_path / "no-such-python"))
        ahead = ParseAhead(str(tmp_path), STAGES, [["1_s"]], LIMIT)
        assert ahead.take() == {}
        ahead.close()
        (failed,) = [e for e in log_events() if e["event"] == "parse_ahead.failed"]
        assert "cannot start it" in failed["error"]


class TestAWorkerCannotHurt:
    def test_a_module_in_the_current_folder_is_not_imported(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The units start the daemon in the stories folder, which others can write:
        a `pickle.py` there is not what the worker imports (python -P)."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_a", name="a")
        marker = tmp_path / "imported"
        (stories.root / "pickle.py").write_text(
            f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n", encoding="utf-8")
        monkeypatch.chdir(stories.root)
        ahead = ParseAhead(str(stories.root), STAGES, [["1_a"]], LIMIT)
        try:
            answer = ahead.take()
        finally:
            ahead.close()
        assert list(answer) == paths_of(stories, "1_backlog", "1_a")
        assert not marker.exists()

    @pytest.mark.parametrize(("script", "said"), [
        # A length no answer can have: refused before anything is allocated.
        ("printf '\\377\\377\\377\\377\\377\\377\\377\\177'", "an answer of"),
        # Alive after it (no end of the pipe to race the bad answer to the warning).
        ("printf '\\005\\000\\000\\000\\000\\000\\000\\000abcde'; exec sleep 30", "a bad answer"),
        ("printf '\\100\\000\\000\\000\\000\\000\\000\\000half'", "ended after"),
        ("exec sleep 30", "no answer in"),
    ], ids=["huge length", "not a pickle", "cut short", "silent"])
    def test_a_broken_worker_leaves_the_parsing_to_the_caller(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, said: str,
            log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """Whatever a worker sends (or does not): empty answers, one warning saying
        what went wrong, and no exception for the apply thread."""
        fake = tmp_path / "fake-python"
        fake.write_text(f"#!/bin/sh\ncat > /dev/null\n{script}\n", encoding="utf-8")
        fake.chmod(0o755)
        monkeypatch.setattr("sys.executable", str(fake))
        monkeypatch.setattr("pipelined.parse_ahead.TAKE_TIMEOUT_S", 0.5)
        ahead = ParseAhead(str(tmp_path), STAGES, [["1_a"], ["2_b"]], LIMIT)
        try:
            answers = [ahead.take(), ahead.take()]
        finally:
            ahead.close()
        assert answers == [{}, {}]
        (failed,) = [e for e in log_events() if e["event"] == "parse_ahead.failed"]
        assert said in failed["error"], failed

    def test_the_daemons_signals_do_not_stop_the_worker(self, tmp_path: Path) -> None:
        """SIGTERM and SIGINT (`systemctl stop`, Ctrl-C) reach the worker too; it goes on
        with the catch-up the first signal lets finish."""
        stories = Stories(tmp_path / "root")
        chunks = []
        for c in range(6):  # answers over a pipe's 64 KiB: the worker stays blocked
            chunk = [f"{c * 40 + n}_s" for n in range(40)]
            for story_id in chunk:
                stories.write("1_backlog", story_id, name=story_id, body="w " * 1500)
            chunks.append(chunk)
        ahead = ParseAhead(str(stories.root), STAGES, chunks, LIMIT)
        try:
            assert len(ahead.take()) == 40
            proc = ahead._proc
            assert proc is not None and proc.poll() is None  # still writing its answers
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGINT)
            assert [len(ahead.take()) for _ in range(5)] == [40] * 5
        finally:
            ahead.close()


class TestTheWorkersAnswers:
    """`serve`, the worker's loop, in-process over byte streams."""

    def served(self, request: tuple[Any, ...], limit: int = LIMIT) -> list[dict[str, Any]]:
        import io
        import pickle

        out = io.BytesIO()
        serve(limit, io.BytesIO(pickle.dumps(request)), out)
        data, answers = out.getvalue(), []
        while data:
            size = int.from_bytes(data[:8], "little")
            answers.append(pickle.loads(data[8:8 + size]))
            data = data[8 + size:]
        return answers

    def test_a_worker_of_another_parser_version_answers_nothing(self, tmp_path: Path) -> None:
        """The package upgraded under a running daemon: the new parser's stories are
        not the old one's, so the worker gives up and the daemon parses alone."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_a", name="a")
        request = (PARSER_VERSION, str(stories.root), STAGES, [["1_a"]])
        assert len(self.served(request)) == 1
        assert self.served(("0-not-this-one", *request[1:])) == []

    def test_a_failed_parse_and_files_past_the_budget_are_left_out(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A story whose parse failed here (memory, recursion) may not fail in the
        daemon: left out; so are files once an answer holds its budget of bytes."""
        stories = Stories(tmp_path / "root")
        for n in range(1, 5):
            stories.write("1_backlog", f"{n}_s", name=f"s {n}", body="b" * 900)
        size = stories.path("1_backlog", "1_s").stat().st_size
        monkeypatch.setattr("pipelined.parse_ahead.ANSWER_BUDGET_BYTES", 2 * size)
        real = parse_ahead.parse_story

        def failing_on_2(raw: bytes, limit: int) -> ParsedStory:
            story = real(raw, limit)
            if b"s 2" in raw:
                return ParsedStory(story.fields, errors=(StoryError("parser_failed", "x"),))
            return story

        monkeypatch.setattr("pipelined.parse_ahead.parse_story", failing_on_2)
        (answer,) = self.served((PARSER_VERSION, str(stories.root), STAGES,
                                 [["1_s", "2_s", "3_s", "4_s"]]))
        assert sorted(answer) == paths_of(stories, "1_backlog", "1_s", "3_s")


class TestTheReconcilerTakesOnlyTheSameBytes:
    def reconcile_with(self, stories: Stories, ahead: dict[str, tuple[bytes, ParsedStory]]
                       ) -> dict[str, Any]:
        state = PipelineState(client_id=5)
        reconciler = Reconciler(stories.root, STAGES, state, ContentMap(), {}, LIMIT)
        result = reconciler.reconcile(["1_a"], confirm_absent=True, ahead=ahead)
        (row,) = result.batch.upserts
        return {"name": row.fields["name"], "content": row.content,
                "state": state.get("1_a")}

    def test_a_story_parsed_from_these_bytes_is_taken(self, tmp_path: Path) -> None:
        stories = Stories(tmp_path / "root")
        path = stories.write("1_backlog", "1_a", name="on disk")
        raw = path.read_bytes()
        # A story the parser would never make from these bytes shows which one was used.
        marked = parse_story(story_text(name="from the worker").encode(), LIMIT)
        got = self.reconcile_with(stories, {str(path): (digest(raw), marked)})
        assert got["name"] == "from the worker"

    def test_a_file_changed_since_the_worker_read_it_is_parsed_again(
            self, tmp_path: Path) -> None:
        """The worker read an older version: its digest differs, the file as it is now
        is parsed and stored, content and state alike."""
        stories = Stories(tmp_path / "root")
        old = stories.write("1_backlog", "1_a", name="old").read_bytes()
        stale = (digest(old), parse_story(old, LIMIT))
        path = stories.write("1_backlog", "1_a", name="new", body="edited\n")
        got = self.reconcile_with(stories, {str(path): stale})
        assert got["name"] == "new"
        assert got["state"]["name"] == "new"  # type: ignore[index]
        assert got["content"] == path.read_text(encoding="utf-8")


class TestAStartUpParsesAhead:
    def test_a_first_import_of_many_chunks_equals_the_files(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            log_events: Callable[[], list[dict[str, Any]]]) -> None:
        """Chunks of 10 ids (the worker parses all but the first): every row as the files
        say, no warning, and the worker gone once the catch-up is committed."""
        monkeypatch.setattr(startup, "STARTUP_CHUNK", 10)
        monkeypatch.setattr(startup, "PARSE_AHEAD_MIN", 20)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})  # a 1-CPU runner
        stories = Stories(tmp_path / "root")
        expected: dict[str, tuple[str, str, int]] = {}
        for n in range(1, 46):
            stage = STAGES[n % 3]
            stories.write(stage, f"{n}_story_s", name=f"story {n}", retry_count=n % 4)
            expected[f"{n}_story_s"] = (stage, f"story {n}", n % 4)
        db = tmp_path / "p.db"
        conn = open_writer(db)
        apply_migrations(conn, db)
        conn.close()
        writer = Writer(lambda: open_writer(db), 4, path=db, outcome=Outcome())
        writer.start()
        config = resolve({"root": stories.root, "db": db}, env={})
        workers: list[ParseAhead] = []
        real = startup.Startup._parse_ahead

        def kept(self: Startup, *args: Any) -> ParseAhead | None:
            made = real(self, *args)
            workers.extend([made] if made is not None else [])
            return made

        monkeypatch.setattr(startup.Startup, "_parse_ahead", kept)
        try:
            Startup(config, stories.root, db, writer, lambda _n: None).run()
        finally:
            writer.close(30)
        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        got = {sid: (stage, name, retry) for sid, stage, name, retry in conn.execute(
            "SELECT id, stage, name, retry_count FROM pipeline_items")}
        conn.close()
        assert got == expected
        (worker,) = workers
        assert worker.answered == 4  # chunks 2 to 5 of 45 ids
        assert worker._proc is None  # closed: the process was killed and reaped
        assert not [e for e in log_events() if e["level"] in ("warning", "error")]
