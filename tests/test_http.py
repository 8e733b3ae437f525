"""`pipelined serve` as a real process (uvicorn on a free loopback port) beside a real
daemon: the API's shapes, the write rule, the Host allow-list, the headers, the event
stream, MCP over HTTP; and the change feed's bounds in-process."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import DEADLINE_S, DaemonProcess, Served, Stories
from mcp import Client

from pipelined.errors import EXIT_NEEDS_A_PERSON
from pipelined.web import CSP

XSS = ('---\nname: "<img src=x onerror=alert(1)>"\n---\n'
       "<script>alert(1)</script>\n\n[click](javascript:alert(1)) "
       "<img src=x onerror=alert(2)> ![pixel](http://203.0.113.9/p.png) "
       "[docs](https://example.com/docs)\n")


@pytest.fixture
def served(stories: Stories, daemon: DaemonProcess) -> Iterator[Served]:
    stories.write("1_backlog", "10_story_login", name="Login form", body="Password field\n")
    stories.write("2_current", "11_bug_crash", name="Crash", agent="coder-1", depends_on=[10])
    stories.write("4_merge", "12_story_xss", XSS)
    daemon.start()
    daemon.wait_row("12_story_xss")
    server = Served(stories, daemon.db)
    try:
        yield server
    finally:
        server.stop()


def without_daemon(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "daemon"}


class TestReads:
    def test_the_cli_shapes(self, served: Served, daemon: DaemonProcess) -> None:
        """`/api/stories/{id}` is `show --json`; `/api/stories` pages `ls --json` records;
        every answer says how fresh it is."""
        shown = served.get("/api/stories/10")
        assert without_daemon(shown) == json.loads(daemon.cli("show", "10", "--json").stdout)
        assert shown["daemon"]["state"] == "ready"
        listed = json.loads(daemon.cli("ls", "--json").stdout)
        page = served.get("/api/stories?limit=2")
        assert page["stories"] == listed[:2] and page["total"] == 3
        rest = served.get(f"/api/stories?limit=2&cursor={page['next_cursor']}")
        assert rest["stories"] == listed[2:] and rest["next_cursor"] is None
        assert [s["id"] for s in served.get("/api/stories?stage=current")["stories"]] == [
            "11_bug_crash"]
        assert served.get("/api/search?q=password")["hits"][0]["id"] == "10_story_login"
        assert served.get("/api/status")["stages"] == {"1_backlog": 1, "2_current": 1,
                                                      "4_merge": 1}
        assert served.get("/api/log?id=11")["history"][0]["kind"] == "created"
        assert served.get("/healthz") == {"ok": True, "daemon": served.get("/healthz")["daemon"]}
        board = served.get("/api/board")
        crash = board["columns"][1]["cards"][0]
        assert crash["id"] == "11_bug_crash" and crash["unmet"] == [10]

    def test_errors_are_one_line_with_a_fitting_status(self, served: Served) -> None:
        for path, status in (("/api/stories/99", 404), ("/api/stories?stage=nope", 400),
                             ("/api/stories?limit=0", 400), ("/api/search?q=%22", 400),
                             # int() refuses 4,301 digits; SQLite stops at 2**63 - 1
                             ("/api/stories?limit=" + "9" * 4301, 400),
                             (f"/api/log?limit={2**64}", 400),
                             (f"/api/events?since={2**63}", 400),
                             ("/api/events?since=" + "9" * 4301, 400),
                             ("/api/events?since=soon", 400)):
            code, _headers, body = served.request("GET", path)
            assert code == status and "\n" not in body["error"], (path, code, body)
        code, _headers, body = served.request("GET", "/api/events",
                                              headers={"Last-Event-ID": str(2**64)})
        assert code == 400 and body["error"].startswith("since="), body

    def test_story_text_is_never_markup(self, served: Served) -> None:
        """The markdown is rendered with raw HTML off and unsafe links dropped; names
        travel as JSON strings (the board sets them as text)."""
        story = served.get("/api/stories/12?html=1")
        html = story["html"]
        assert re.search(r"<(script|img)\b", html) is None and "javascript" not in re.sub(
            r"\[click\]\(javascript:alert\(1\)\)", "", html)
        assert "&lt;script&gt;" in html and "[click](javascript:alert(1))" in html
        assert re.findall(r"<a [^>]*>", html) == [  # the picture stays a link, never fetched
            '<a href="http://203.0.113.9/p.png" rel="noopener noreferrer nofollow" '
            'target="_blank">', '<a href="https://example.com/docs" '
            'rel="noopener noreferrer nofollow" target="_blank">']
        assert story["name"] == "<img src=x onerror=alert(1)>"


class TestTheGuard:
    def test_every_answer_has_the_security_headers(self, served: Served) -> None:
        for path in ("/", "/api/status", "/static/board.js", "/api/stories/99"):
            _status, headers, _body = served.request("GET", path)
            assert headers["content-security-policy"] == CSP
            assert "unsafe-inline" not in CSP and headers["x-content-type-options"] == "nosniff"

    def test_a_foreign_host_is_refused(self, served: Served) -> None:
        status, _headers, body = served.request("GET", "/api/status",
                                                headers={"Host": "attacker.example:80"})
        assert status == 421 and "Host" in body["error"]

    def test_writes_need_the_same_origin_or_the_token(self, served: Served,
                                                      stories: Stories) -> None:
        move = {"stage": "2_current"}
        status, _h, body = served.request("POST", "/api/stories/10/move", move,
                                          {"Origin": "http://attacker.example"})
        assert status == 403 and "token" in body["error"]
        assert stories.path("1_backlog", "10_story_login").exists()
        status, _h, body = served.request("POST", "/api/stories/10/move", move,
                                          {"Origin": f"http://{served.host}"})
        assert status == 200 and body["confirmed"] is True
        status, _h, body = served.request("POST", "/api/stories/10", {"agent": "coder-2"})
        assert status == 200 and body["changed"] == ["agent"]
        status, _h, body = served.request("POST", "/api/stories/10", {"retry_count": "x"})
        assert status == 400 and "retry_count" in body["error"]

    def test_a_token_lets_writes_in_from_anywhere_and_is_required_beyond_loopback(
            self, stories: Stories, daemon: DaemonProcess, tmp_path: Path) -> None:
        stories.write("1_backlog", "10_story_login", name="Login")
        daemon.start()
        daemon.wait_row("10_story_login")
        refused = subprocess.run(
            [sys.executable, "-m", "pipelined", "serve", "--root", str(stories.root),
             "--db", str(daemon.db), "--listen", "0.0.0.0:0"],
            capture_output=True, text=True, timeout=DEADLINE_S, check=False)
        assert refused.returncode == EXIT_NEEDS_A_PERSON and "needs --token-file" in refused.stderr
        token = tmp_path / "token"
        token.write_text("s3cret-token-0123456789\n")
        server = Served(stories, daemon.db, "--token-file", str(token))
        try:
            foreign = {"Origin": "http://elsewhere.example"}
            status, _h, _b = served_post(server, "Bearer wrong-token-0123456789", foreign)
            assert status == 403
            status, _h, body = served_post(server, "Bearer s3cret-token-0123456789", foreign)
            assert status == 200 and body["to_stage"] == "2_current"
        finally:
            server.stop()


def served_post(server: Served, authorization: str,
                headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    return server.request("POST", "/api/stories/10/move", {"stage": "2_current"},
                          {"Authorization": authorization, **headers})


class TestEvents:
    def read_events(self, served: Served, count: int, last_id: str | None = None,
                    then: Any = None) -> list[dict[str, str]]:
        """`count` events from /api/events (after `then()` runs, once connected)."""
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE_S)
        try:
            head = f"GET /api/events HTTP/1.1\r\nHost: {served.host}\r\n"
            if last_id is not None:
                head += f"Last-Event-ID: {last_id}\r\n"
            sock.sendall((head + "\r\n").encode())
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(4096)
            buffer = buffer.split(b"\r\n\r\n", 1)[1]
            if then is not None:
                then()
            events: list[dict[str, str]] = []
            deadline = time.monotonic() + DEADLINE_S
            while len(events) < count and time.monotonic() < deadline:
                while b"\r\n\r\n" in buffer and len(events) < count:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                                  if ": " in line and not line.startswith(":"))
                    if "id" in fields:
                        events.append(fields)
                if len(events) < count:
                    buffer += sock.recv(4096)
            return events
        finally:
            sock.close()

    def test_a_save_is_an_event_and_a_reconnect_resumes(
            self, served: Served, stories: Stories) -> None:
        events = self.read_events(served, 1, then=lambda: stories.write(
            "2_current", "11_bug_crash", name="Crash fixed", agent="coder-1", depends_on=[10]))
        row = json.loads(events[0]["data"])
        assert (row["id"], row["kind"], row["fields"]) == ("11_bug_crash", "updated", ["name"])
        assert events[0]["id"] == str(row["seq"]) and events[0]["event"] == "change"
        stories.write("1_backlog", "13_story_new", name="New")
        # Reconnecting with the last id seen: what happened meanwhile comes first.
        resumed = self.read_events(served, 1, last_id=events[0]["id"])
        assert json.loads(resumed[0]["data"])["id"] == "13_story_new"


    def test_stopping_with_streams_open_logs_no_error(self, stories: Stories,
                                                     daemon: DaemonProcess) -> None:
        """SIGTERM while clients hold /api/events: the streams end, the server stops,
        and its stderr holds no ERROR line (uvicorn called every cut stream one)."""
        stories.write("1_backlog", "10_story_login", name="Login")
        daemon.start()
        server = Served(stories, daemon.db)
        streams = []
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE_S)
            conn.request("GET", "/api/events?since=0", headers={"Host": server.host})
            response = conn.getresponse()
            assert response.status == 200
            assert response.readline().startswith(b"id: ")  # the stream is running
            streams.append(conn)
        server.proc.terminate()
        assert server.proc.wait(DEADLINE_S) in (0, -signal.SIGTERM)
        assert server.proc.stderr is not None
        rest = server.proc.stderr.read()
        server.proc.stderr.close()
        for conn in streams:
            conn.close()
        assert "ERROR" not in rest and "Traceback" not in rest, rest


class TestChangeFeed:
    def test_a_reader_that_stops_holds_nothing_and_loses_nothing(self, tmp_path: Path) -> None:
        """Twenty rows while one subscriber reads and another has stopped reading: the
        first gets all twenty as they come (pages of 7); the stopped one, holding no
        buffer, gets the same twenty, in order, once it reads again."""
        import apsw

        from pipelined.changefeed import ChangeFeed
        from pipelined.store.connection import open_writer
        from pipelined.store.migrations import apply_migrations

        db = tmp_path / "f.db"
        writer = open_writer(db)
        apply_migrations(writer, db)

        def connect() -> apsw.Connection:
            return apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)

        async def take(rows: Any, count: int) -> list[int]:
            got: list[int] = []
            async for row in rows:
                got.append(row["seq"])
                if len(got) == count:
                    break
            return got

        async def main() -> tuple[list[int], list[int]]:
            feed = ChangeFeed(connect, poll_s=0.01, page_rows=7)
            await feed.start()
            stopped = feed.rows(None)
            reader = asyncio.ensure_future(take(feed.rows(None), 20))
            await asyncio.sleep(0.05)
            for n in range(20):
                writer.execute("INSERT INTO pipeline_items(id, stage, created_at, updated_at) "
                               "VALUES (?, '1_backlog', 't', 't')", (f"{n + 1}_story_x",))
            got = await asyncio.wait_for(reader, DEADLINE_S)
            late = await asyncio.wait_for(take(stopped, 20), DEADLINE_S)
            await feed.stop()
            return got, late

        got, late = anyio.run(main)
        writer.close()
        assert got == list(range(1, 21)) and late == got


class TestMcpOverHttp:
    def test_the_same_tools_at_slash_mcp(self, served: Served) -> None:
        async def main() -> Any:
            async with Client(f"http://{served.host}/mcp") as client:
                return await client.call_tool("story_view", {"id": "10"})

        result = anyio.run(main)
        assert not result.is_error and result.structured_content["story"]["name"] == "Login form"


class TestSocketActivation:
    def test_serve_takes_the_socket_systemd_passes(self, stories: Stories,
                                                   daemon: DaemonProcess) -> None:
        """LISTEN_FDS=1 and LISTEN_PID of the server: it answers on fd 3, bound by its
        parent (as pipelined-serve.socket does), whatever --listen says."""
        stories.write("1_backlog", "10_story_login", name="Login")
        daemon.start()
        daemon.wait_row("10_story_login")
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        # What systemd does between fork and exec: the socket at fd 3, LISTEN_PID = the
        # server's own pid (execv keeps it), LISTEN_FDS=1.
        wrapper = ("import os, sys\n"
                   "os.dup2(int(sys.argv[1]), 3)\n"
                   "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1')\n"
                   "os.execv(sys.executable, [sys.executable, '-m', 'pipelined', "
                   "*sys.argv[2:]])\n")
        proc = subprocess.Popen(
            [sys.executable, "-c", wrapper, str(listener.fileno()), "serve", "--root",
             str(stories.root), "--db", str(daemon.db), "--listen", "127.0.0.1:1"],
            pass_fds=(listener.fileno(),), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        listener.close()
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()
            assert f"127.0.0.1:{port}/" in line, line + proc.stderr.read()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
            conn.request("GET", "/api/stories/10")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["name"] == "Login"
            conn.close()
        finally:
            proc.terminate()
            proc.wait(DEADLINE_S)
            assert proc.stderr is not None
            proc.stderr.close()


def test_the_listening_socket_sends_without_delay() -> None:
    """TCP_NODELAY on the listener (accepted sockets inherit it): without it every
    request of a kept-alive connection waited 40 ms for the client's delayed ACK
    (bench_board.py measured 44 ms p50 for /api/stories/{id}; 1 ms with it)."""
    from pipelined.commands.serve import _no_delay, _socket

    sock = _no_delay(_socket("127.0.0.1", 0))
    try:
        client = socket.create_connection(sock.getsockname())
        accepted, _address = sock.accept()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
            client.close()
    finally:
        sock.close()
