"""The MCP server in-process, through the official SDK's client (`mcp.Client(server)`), on a
database built by the real import code (rebuild's)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import STAGES, DaemonProcess, Stories
from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer

from pipelined.config import resolve
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.mcp_server import build_server

ANSWER_LIMIT = 80_000  # bytes: no single answer over about this


def run_client(server: MCPServer, work: Callable[[Client], Any]) -> Any:
    async def main() -> Any:
        async with Client(server) as client:
            return await work(client)
    return anyio.run(main)


class Tools:
    """Calls tools on one in-process server; returns (is_error, value or error text, size)."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server

    def call(self, tool: str, **arguments: Any) -> Any:
        async def work(client: Client) -> Any:
            return await client.call_tool(tool, arguments)
        return run_client(self.server, work)

    def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        result = self.call(tool, **arguments)
        assert not result.is_error, result.content
        text = result.content[0].text
        assert json.loads(text) == result.structured_content
        size = len(result.model_dump_json(by_alias=True))
        assert size < ANSWER_LIMIT, (tool, size)
        return result.structured_content  # type: ignore[no-any-return]

    def error(self, tool: str, **arguments: Any) -> str:
        result = self.call(tool, **arguments)
        assert result.is_error
        text: str = result.content[0].text
        assert "\n" not in text and len(text) < 400, text
        return text


def build(stories: Stories, db: Path) -> Tools:
    config = resolve({"root": stories.root, "db": db}, env={})
    rebuild(config)
    configure_logging()  # rebuild logged to this test's stderr
    return Tools(build_server(config))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Stories, Tools]:
    """Stories 10-13 and 20-22 in every stage, two sharing number 12, one broken."""
    tmp = tmp_path_factory.mktemp("mcp")
    stories = Stories(tmp / "root")
    stories.write("1_backlog", "10_story_login", name="Login form", body="Password field\n")
    stories.write("1_backlog", "11_bug_crash", name="Crash on save", agent="coder-1",
                  blocked=True)
    stories.write("2_current", "12_story_export", name="Export CSV", agent="coder-2",
                  depends_on=[10])
    stories.write("2_current", "12_spike_cache", name="Cache spike")
    stories.write("2_current", "13_refactor_cli", name="Split the CLI", depends_on=[20])
    stories.write("4_merge", "20_story_search", name="Search", agent="coder-1")
    stories.write("4_merge", "21_story_broken", text="---\nname: [unclosed\n---\nbody\n")
    stories.write("4_merge", "22_story_long", name="Long", body="word " * 40_000)
    return stories, build(stories, tmp / "p.db")


def ids(answer: dict[str, Any]) -> list[str]:
    return [s["id"] for s in answer["stories"]]


class TestTheToolList:
    def test_tools_are_typed_and_reads_say_so(self, pipeline: tuple[Stories, Tools]) -> None:
        """Nine tools with JSON schemas; the five reads are annotated read-only."""
        async def work(client: Client) -> Any:
            return await client.list_tools()
        listed = {t.name: t for t in run_client(pipeline[1].server, work).tools}
        reads = {"story_list", "story_view", "story_search", "story_log", "pipeline_status"}
        writes = {"story_create", "story_move", "story_update", "story_claim"}
        assert set(listed) == reads | writes
        assert all(listed[n].annotations.read_only_hint for n in reads)
        assert not any(listed[n].annotations.read_only_hint for n in writes)
        schema = listed["story_list"].input_schema["properties"]
        assert schema["limit"]["maximum"] == 500 and schema["limit"]["default"] == 50
        assert "enum" in json.dumps(schema["type"])
        assert listed["story_claim"].input_schema["required"] == ["id", "agent"]


class TestStoryList:
    def test_filters(self, pipeline: tuple[Stories, Tools]) -> None:
        tools = pipeline[1]
        assert ids(tools.ok("story_list", stage="current")) == [
            "12_spike_cache", "12_story_export", "13_refactor_cli"]
        assert ids(tools.ok("story_list", agent="coder-1")) == ["11_bug_crash", "20_story_search"]
        assert "11_bug_crash" not in ids(tools.ok("story_list", unassigned=True))
        assert ids(tools.ok("story_list", blocked=True)) == ["11_bug_crash"]
        assert ids(tools.ok("story_list", type="bug")) == ["11_bug_crash"]
        ready = ids(tools.ok("story_list", ready=True, stage="2_current"))
        assert ready == ["12_spike_cache", "13_refactor_cli"]  # 12_story_export waits on 10

    def test_records_are_compact_and_the_daemon_state_is_said(
            self, pipeline: tuple[Stories, Tools]) -> None:
        answer = pipeline[1].ok("story_list", stage="backlog")
        assert answer["total"] == 2 and answer["next_cursor"] is None
        assert answer["stories"][1] == {
            "id": "11_bug_crash", "stage": "1_backlog", "name": "Crash on save",
            "agent": "coder-1", "retry_count": 0, "blocked": True,
            "updated_at": answer["stories"][1]["updated_at"]}
        assert answer["daemon"]["state"] == "stopped"
        assert "no daemon is running" in answer["daemon"]["note"]

    def test_pages_cover_everything_once(self, pipeline: tuple[Stories, Tools]) -> None:
        tools = pipeline[1]
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            answer = tools.ok("story_list", limit=3, **({"cursor": cursor} if cursor else {}))
            assert answer["total"] == 8
            seen += ids(answer)
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 8 and len(set(seen)) == 8

    def test_bad_arguments_are_one_line(self, pipeline: tuple[Stories, Tools]) -> None:
        tools = pipeline[1]
        assert "unknown stage 'nope'" in tools.error("story_list", stage="nope")
        assert "not a cursor" in tools.error("story_list", cursor="garbage!")
        result = tools.call("story_list", limit=501)
        assert result.is_error and "less than or equal to 500" in result.content[0].text


class TestStoryView:
    def test_by_number_with_body_files_errors_and_history(
            self, pipeline: tuple[Stories, Tools]) -> None:
        answer = pipeline[1].ok("story_view", id="10")
        story = answer["story"]
        assert story["id"] == "10_story_login" and story["name"] == "Login form"
        assert story["body"].startswith("Password field")  # the front matter is not repeated
        assert story["files"] == [{"path": "1_backlog/10_story_login.md", "winner": True}]
        assert [row["kind"] for row in answer["history"]] == ["created"]

    def test_a_broken_story_shows_its_error_code(self, pipeline: tuple[Stories, Tools]) -> None:
        story = pipeline[1].ok("story_view", id="21")["story"]
        assert [e["code"] for e in story["errors"]] == ["front_matter_syntax"]

    def test_a_long_body_is_cut_with_a_note(self, pipeline: tuple[Stories, Tools]) -> None:
        story = pipeline[1].ok("story_view", id="22_story_long")["story"]
        assert 30_000 < len(story["body"]) < 36_000 and story["body"].startswith("word word")
        assert "story://22_story_long" in story["body_cut"]

    def test_unknown_ambiguous_and_huge_refs(self, pipeline: tuple[Stories, Tools]) -> None:
        tools = pipeline[1]
        assert "no story '99'" in tools.error("story_view", id="99")
        assert "12_spike_cache, 12_story_export" in tools.error("story_view", id="12")
        assert "no story" in tools.error("story_view", id="9" * 10_000)

    def test_the_markdown_resource(self, pipeline: tuple[Stories, Tools]) -> None:
        async def work(client: Client) -> Any:
            return await client.read_resource("story://10")
        contents = run_client(pipeline[1].server, work).contents
        assert contents[0].text == pipeline[0].path("1_backlog", "10_story_login").read_text()


class TestOtherReads:
    def test_search_log_and_status(self, pipeline: tuple[Stories, Tools]) -> None:
        tools = pipeline[1]
        hits = tools.ok("story_search", query="password")["hits"]
        assert [h["id"] for h in hits] == ["10_story_login"] and hits[0]["snippet"]
        assert "bad search query" in tools.error("story_search", query='"unbalanced')
        log = tools.ok("story_log", id="20")
        assert log["id"] == "20_story_search" and log["history"][0]["kind"] == "created"
        status = tools.ok("pipeline_status")
        assert status["stories"] == 8 and status["stages"]["2_current"] == 3
        assert status["state"] == "stopped"


@pytest.fixture
def writable(tmp_path: Path) -> tuple[Stories, Tools]:
    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "5_story_one", name="One")
    stories.write("2_current", "7_story_two", name="Two", agent="coder-1")
    stories.write("2_current", "8_story_odd", text="---\nname: x\nagent: a\nagent: b\n---\n")
    return stories, build(stories, tmp_path / "p.db")


class TestWrites:
    def test_create_move_update_claim(self, writable: tuple[Stories, Tools]) -> None:
        stories, tools = writable
        created = tools.ok("story_create", title="Add a logout", type="bug", stage="current",
                           depends_on=[5])
        assert created["id"] == "9_bug_add_a_logout" and created["confirmed"] is None
        assert stories.path("2_current", "9_bug_add_a_logout").exists()
        moved = tools.ok("story_move", id="5", stage="merge")
        assert (moved["from_stage"], moved["to_stage"], moved["moved"]) == (
            "1_backlog", "4_merge", True)
        before = stories.path("4_merge", "5_story_one").read_text()
        updated = tools.ok("story_update", id="5", blocked=True, clear=["name"])
        assert sorted(updated["changed"]) == ["blocked", "name"]
        assert updated["fields"]["name"] is None and updated["fields"]["blocked"] is True
        after = stories.path("4_merge", "5_story_one").read_text()
        assert after == before.replace('name: "One"', "name: null").replace(
            "blocked: false", "blocked: true")
        assert tools.ok("story_claim", id="5", agent="coder-3")["fields"]["agent"] == "coder-3"
        assert "claimed by 'coder-1'" in tools.error("story_claim", id="7", agent="coder-3")

    def test_bad_writes_write_nothing(self, writable: tuple[Stories, Tools]) -> None:
        stories, tools = writable
        files = sorted(p.name for p in stories.root.rglob("*") if p.is_file())
        assert "at most 500" in tools.error("story_create", title="x" * 10_000)
        assert "a story needs a title" in tools.error("story_create", title="   ")
        assert "unknown stage" in tools.error("story_move", id="5", stage="9_nope")
        assert "written 2 times" in tools.error("story_update", id="8", agent="c")
        assert "nothing to set" in tools.error("story_update", id="5")
        assert "no story" in tools.error("story_claim", id="77", agent="c")
        assert sorted(p.name for p in stories.root.rglob("*") if p.is_file()) == files

    def test_stages_answer_to_their_alias(self, writable: tuple[Stories, Tools]) -> None:
        assert STAGES == ("1_backlog", "2_current", "4_merge")
        assert writable[1].ok("story_move", id="7", stage="Backlog")["to_stage"] == "1_backlog"


class TestOverStdioWithADaemon:
    def test_a_real_mcp_subprocess_against_a_running_daemon(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """`pipelined mcp` started as an agent client starts it; an update is confirmed by
        the daemon and shows in the next view; the daemon is said to be ready."""
        stories.write("1_backlog", "30_story_agents", name="Agents", body="Work through MCP\n")
        daemon.start()
        daemon.wait_row("30_story_agents")
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "pipelined", "mcp", "--root", str(stories.root), "--db", str(daemon.db)])

        async def work(client: Client) -> Any:
            claimed = await client.call_tool("story_claim", {"id": "30", "agent": "coder-7"})
            viewed = await client.call_tool("story_view", {"id": "30"})
            status = await client.call_tool("pipeline_status", {})
            return claimed, viewed, status

        async def main() -> Any:
            async with Client(params, read_timeout_seconds=30) as client:
                return await work(client)

        claimed, viewed, status = anyio.run(main)
        assert not claimed.is_error, claimed.content
        assert claimed.structured_content["confirmed"] is True
        story = viewed.structured_content["story"]
        assert story["agent"] == "coder-7" and story["body"] == "Work through MCP\n"
        assert viewed.structured_content["daemon"]["state"] == "ready"
        assert "note" not in viewed.structured_content["daemon"]
        assert status.structured_content["running"] is True

    def test_a_missing_database_is_one_line_before_serving(self, stories: Stories,
                                                           tmp_path: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "pipelined", "mcp", "--root", str(stories.root),
             "--db", str(tmp_path / "none.db")],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1


class TestBounds:
    def test_pages_of_long_records_stay_small_and_follow_the_ls_order(
            self, tmp_path: Path) -> None:
        """600 stories with 480-character names: a page of `limit` 500 stops early (every
        answer is checked under 80 kB), and the pages together are every story once, in
        the order `ls` shows them (stage number, then story number)."""
        from pipelined.store import queries
        from pipelined.store.connection import open_read_only
        from pipelined.views import sort_stories

        stories = Stories(tmp_path / "root")
        for n in range(1, 601):
            stage = STAGES[n % 3]
            stories.write(stage, f"{n}_{'bug' if n % 7 == 0 else 'story'}_s", name="n" * 480)
        tools = build(stories, tmp_path / "p.db")
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            answer = tools.ok("story_list", limit=500, **({"cursor": cursor} if cursor else {}))
            pages += 1
            assert answer["total"] == 600 and len(answer["stories"]) < 500
            seen += ids(answer)
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        conn = open_read_only(tmp_path / "p.db")
        expected = [i["id"] for i in sort_stories(queries.list_stories(conn), "stage")]
        conn.close()
        assert pages > 2 and seen == expected
        bugs = tools.ok("story_list", type="bug", limit=500)
        assert bugs["total"] == 85 and all("_bug_" in s["id"] for s in bugs["stories"])


class TestTitles:
    def test_a_title_with_nothing_to_name_the_file_by(self, writable: tuple[Stories, Tools]
                                                      ) -> None:
        """Punctuation alone is refused; a title in another script keeps its name and gets
        the `untitled` slug (its id must stay a portable ASCII file name)."""
        stories, tools = writable
        assert "no letter or digit" in tools.error("story_create", title="?!  --- !")
        created = tools.ok("story_create", title="ログイン画面")
        assert created["id"] == "9_story_untitled"
        text = stories.path("1_backlog", "9_story_untitled").read_text()
        assert 'name: "ログイン画面"' in text


class TestHostileSizes:
    def test_every_answer_stays_small_whatever_the_files_hold(self, tmp_path: Path) -> None:
        """Bytes, not characters: emoji names, a 200 kB name, 600 kB of other keys, a
        body of Chinese characters; lists, views, searches and writes all stay under
        80 kB (Tools.ok checks each answer's whole JSON-RPC size)."""
        stories = Stories(tmp_path / "root")
        for n in range(1, 301):
            stories.write("1_backlog", f"{n}_story_emoji", f'---\nname: "{"🎉" * 480}"\n---\n')
        stories.write("2_current", "400_story_huge_name", name="n" * 200_000)
        stories.write("2_current", "401_story_huge_extra", name="x", notes="k" * 600_000)
        stories.write("2_current", "402_story_chinese", "---\nname: 中文\n---\n" + "中" * 29_000)
        tools = build(stories, tmp_path / "p.db")
        page = tools.ok("story_list", limit=500)
        assert 0 < len(page["stories"]) < 300 and page["next_cursor"]
        assert tools.ok("story_list", stage="current")["stories"][0]["name"].endswith("…")
        assert tools.ok("story_view", id="400")["story"]["name"].endswith("…")
        extra = tools.ok("story_view", id="401")["story"]
        assert extra["extra"] == {} and "story://401_story_huge_extra" in extra["extra_cut"]
        chinese = tools.ok("story_view", id="402")["story"]
        assert chinese["body"].startswith("中中") and "body_cut" in chinese
        assert tools.ok("story_search", query="emoji", limit=500)["hits"]
        assert tools.ok("story_claim", id="400", agent="coder-1")["fields"]["name"].endswith("…")

    def test_odd_references_are_one_line_errors(self, writable: tuple[Stories, Tools]) -> None:
        tools = writable[1]
        assert "no story" in tools.error("story_view", id="5\x00")
        assert "no story" in tools.error("story_update", id="5\x00", agent="a")
        assert "no story" in tools.error("story_move", id="../5", stage="merge")
        nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
        assert "not a cursor" in tools.error("story_list", cursor=nested)
        assert "choose one" in tools.error("story_update", id="5", agent="a", clear=["agent"])
