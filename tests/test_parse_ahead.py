"""Parsing ahead in a worker process (pipelined.parse_ahead): the real worker, real
files, and the Reconciler and Startup that take its answers only for the same bytes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import STAGES, Stories, story_text

from pipelined import startup
from pipelined.config import resolve
from pipelined.content import ContentMap
from pipelined.outcome import Outcome
from pipelined.parse_ahead import AHEAD_MAX_FILE_BYTES, ParseAhead, digest
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
