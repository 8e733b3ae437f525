"""`pipelined publish` against the official Node y-websocket server, read by plain Yjs.

Real components only: the Node `@y/websocket-server` (tests/node, `npm ci`), the
real daemon and `publish` as subprocesses, one Node reader using the
`y-websocket` client (tests/node/reader.mjs) and one pycrdt reader
(tests/yjs_reader.py). Both readers must converge to the rows after creates,
edits, moves and deletes; a change another client makes in the room is
overwritten; a server restart and a publish restart leave the room equal to the
rows, without duplicates or deleted stories coming back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import DEADLINE_S, DaemonProcess, Stories, git, wait_until

from pipelined.publish import FIELDS, values_of

NODE_DIR = Path(__file__).parent / "node"
SERVER_JS = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NODE is None or not SERVER_JS.exists(),
                       reason="needs node and `npm ci --prefix tests/node` (.ci/run does both)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Lines:
    """A child process whose stdout lines are collected by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=cwd)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(DEADLINE_S)
        self._thread.join(DEADLINE_S)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


class YServer:
    """The official Node server on a loopback port (in memory: a restart empties it)."""

    def __init__(self, script: Path = SERVER_JS, **env: str) -> None:
        self.script = script
        self.env = env
        self.server: Lines | None = None
        for _attempt in range(3):  # another test may take the free port first
            self.port = free_port()
            if self.start():
                return
        pytest.fail("the y-websocket server did not start on three free ports")

    def start(self) -> bool:
        """Start on `self.port`; False if the server exited (the port was taken)."""
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **self.env}
        server = self.server = Lines([str(NODE), str(self.script)], env=env, cwd=NODE_DIR)
        try:
            wait_until(lambda: self._answers() or server.proc.poll() is not None,
                       what="the y-websocket server")
        except BaseException:
            self.stop()
            raise
        if server.proc.poll() is not None:
            self.stop()
            return False
        return True

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as reply:
                return bool(reply.read())
        except OSError:
            return False

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def url(self, room: str = "pipeline") -> str:
        return f"ws://127.0.0.1:{self.port}/{room}"


@pytest.fixture
def yserver() -> Iterator[YServer]:
    server = YServer()
    yield server
    server.stop()


class Publishing:
    """`pipelined publish` as a subprocess, its JSON log lines collected."""

    def __init__(self, daemon: DaemonProcess, url: str, *extra: str) -> None:
        self.proc = Lines([sys.executable, "-m", "pipelined", "publish", "--root",
                           str(daemon.root), "--db", str(daemon.db), "--server", url,
                           "--log-format", "json", *extra])

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.proc.lines):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def wait_event(self, name: str, count: int = 1) -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            matching = [e for e in self.events() if e.get("event") == name]
            return matching[count - 1] if len(matching) >= count else None
        return wait_until(seen, what=f"publish's {name} line")  # type: ignore[no-any-return]

    def stop(self) -> int:
        return self.proc.stop()


def node_reader(url: str) -> Lines:
    base, _, room = url.rpartition("/")
    return Lines([str(NODE), "reader.mjs", base, room], cwd=NODE_DIR)


def python_reader(url: str) -> Lines:
    return Lines([sys.executable, str(Path(__file__).parent / "yjs_reader.py"), url])


def rows_state(db: Path) -> dict[str, dict[str, Any]]:
    """The rows as a reader of the room must see them."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(5000)  # the daemon's writer may be committing
        columns = ", ".join(FIELDS)
        state = {}
        for row in conn.execute(f"SELECT id, {columns} FROM pipeline_items"):
            item = dict(zip(("id", *FIELDS), row, strict=True))
            item["blocked"] = None if item["blocked"] is None else bool(item["blocked"])
            item["depends_on"] = json.loads(item["depends_on"]) if item["depends_on"] else None
            state[item["id"]] = dict(zip(FIELDS, values_of(item), strict=True))
        return state
    finally:
        conn.close()


def shown(reader: Lines, start: int = 0) -> list[dict[str, Any]]:
    """The `stories` maps a reader printed from line `start` on, as printed (a node
    warning on its stderr, merged in, is skipped)."""
    maps = []
    for line in reader.lines[start:]:
        try:
            maps.append(json.loads(line)["stories"])
        except (ValueError, KeyError, TypeError):
            continue
    return maps


def last_state(reader: Lines) -> dict[str, Any] | None:
    printed = shown(reader)
    if not printed:
        return None
    return {k: dict(zip(FIELDS, values_of(v), strict=True)) for k, v in printed[-1].items()}


def converged(readers: list[Lines], db: Path) -> bool:
    expected = rows_state(db)
    return all(last_state(reader) == expected for reader in readers)


def test_readers_follow_the_folders(stories: Stories, daemon: DaemonProcess,
                                    yserver: YServer) -> None:
    stories.write("1_backlog", "1_story_login", name="login", retry_count=2)
    stories.write("2_current", "2_story_export", name="export", agent="coder-1",
                  depends_on=[1])
    stories.write("4_merge", "3_story_board", name="board", blocked=True)
    daemon.start()
    publishing = Publishing(daemon, yserver.url())
    readers = [node_reader(yserver.url()), python_reader(yserver.url())]
    try:
        publishing.wait_event("publish.connected")
        wait_until(lambda: converged(readers, daemon.db), what="both readers: the rows")
        assert len(rows_state(daemon.db)) == 3

        stories.write("1_backlog", "4_story_new", name="new")  # create
        stories.write("2_current", "2_story_export", name="export v2", agent="coder-2",
                      depends_on=[1, 4])  # edit
        stories.move("1_story_login", "1_backlog", "2_current")  # move: retry_count reset
        stories.path("4_merge", "3_story_board").unlink()  # delete
        daemon.wait_gone("3_story_board")
        wait_until(lambda: converged(readers, daemon.db), what="both readers: the changes")
        shown = last_state(readers[0])
        assert shown is not None and "3_story_board" not in shown
        assert shown["1_story_login"] == {"stage": "2_current", "name": "login", "agent": None,
                                          "retry_count": 0, "blocked": False,
                                          "depends_on": None}
        assert shown["2_story_export"]["depends_on"] == [1, 4]
        assert all(reader.proc.poll() is None for reader in readers)
    finally:
        for reader in readers:
            reader.stop()
        assert publishing.stop() == 0
        daemon.stop()
    assert not [e for e in publishing.events() if e.get("level") == "error"]


def test_a_remote_change_is_overwritten_and_logged_once(
        stories: Stories, daemon: DaemonProcess, yserver: YServer, tmp_path: Path) -> None:
    stories.write("1_backlog", "1_story_login", name="login")
    stories.write("1_backlog", "2_story_flag", name="flag")
    stories.write("1_backlog", "3_story_map", name="map")
    daemon.start()
    publishing = Publishing(daemon, yserver.url())
    reader = node_reader(yserver.url())
    writer_js = NODE_DIR / f"remote-{os.getpid()}-{tmp_path.name}.mjs"
    writer_js.write_text(REMOTE_WRITER, encoding="utf-8")
    try:
        publishing.wait_event("publish.connected")
        wait_until(lambda: converged([reader], daemon.db), what="the reader")
        for _round in range(2):
            done = subprocess.run([str(NODE), writer_js.name, yserver.url()], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=DEADLINE_S,
                                  check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            wait_until(lambda: converged([reader], daemon.db),
                       what="the room back to the rows")
        raw = shown(reader)[-1]
        assert set(raw) == {"1_story_login", "2_story_flag", "3_story_map"}
        assert all(set(entry) == set(FIELDS) for entry in raw.values())
        assert raw["2_story_flag"]["blocked"] is False  # `0` == False in Python
        warnings = [e for e in publishing.events()
                    if e.get("event") == "publish.remote_change_overwritten"]
        assert len(warnings) == 1, warnings  # once per connection, not per change
        assert warnings[0]["stories"] == 4, warnings  # each kind of change was seen
    finally:
        writer_js.unlink()
        reader.stop()
        assert publishing.stop() == 0
        daemon.stop()


REMOTE_WRITER = """
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
const [base, room] = [process.argv[2].replace(/\\/[^/]*$/, ''), process.argv[2].split('/').pop()]
const doc = new Y.Doc()
const provider = new WebsocketProvider(base, room, doc, { WebSocketPolyfill: WebSocket })
provider.on('sync', (synced) => {
  if (!synced) return
  const stories = doc.getMap('stories')
  doc.transact(() => {  // one update: publish sees the four changes at once
    stories.set('1_story_login',
                { ...stories.get('1_story_login'), name: 'changed elsewhere', owner: 'me' })
    stories.set('2_story_flag', { ...stories.get('2_story_flag'), blocked: 0 })
    const map = new Y.Map()  // the same values, as a Y.Map: not our shape
    const values = stories.get('3_story_map')
    stories.set('3_story_map', map)
    for (const [key, value] of Object.entries(values)) map.set(key, value)
    stories.set('99_story_injected', new Y.Map())
  })
  setTimeout(() => { provider.destroy(); process.exit(0) }, 300)
})
"""


def test_server_and_publish_restarts_leave_the_room_equal_to_the_rows(
        stories: Stories, daemon: DaemonProcess, yserver: YServer) -> None:
    for n in range(1, 21):
        stories.write(("1_backlog", "2_current", "4_merge")[n % 3], f"{n}_story_s",
                      name=f"s {n}")
    daemon.start()
    publishing = Publishing(daemon, yserver.url())
    try:
        publishing.wait_event("publish.connected")
        # The server restarts empty: publish reconnects and sends the whole state.
        yserver.stop()
        stories.write("1_backlog", "21_story_while_down", name="while the server was down")
        daemon.wait_row("21_story_while_down")
        assert yserver.start(), "the server could not listen again on its port"
        publishing.wait_event("publish.reconnected")
        reader = python_reader(yserver.url())
        wait_until(lambda: converged([reader], daemon.db), what="a new reader: the rows")
        reader.stop()
    finally:
        assert publishing.stop() == 0
    # publish restarts (a new client) while the room keeps the old state: stories deleted
    # and changed meanwhile are right in the room, none twice.
    stories.path("2_current", "1_story_s").unlink()
    stories.write("4_merge", "2_story_s", name="renamed while publish was down")
    daemon.wait_gone("1_story_s")
    daemon.wait_row("2_story_s", lambda r: r["name"].startswith("renamed"))
    publishing = Publishing(daemon, yserver.url())
    reader = node_reader(yserver.url())
    try:
        connected = publishing.wait_event("publish.connected")
        assert connected["written"] == 2  # only the differences
        wait_until(lambda: converged([reader], daemon.db), what="the reader after a restart")
    finally:
        reader.stop()
        assert publishing.stop() == 0
        daemon.stop()


def test_a_rebuilt_database_is_followed(stories: Stories, daemon: DaemonProcess,
                                       yserver: YServer) -> None:
    """`pipelined rebuild` moves the database aside and makes a new one: publish reads
    the new file, and a change after the rebuild reaches the room."""
    stories.write("1_backlog", "1_story_login", name="login")
    daemon.start()
    publishing = Publishing(daemon, yserver.url())
    reader = node_reader(yserver.url())
    try:
        publishing.wait_event("publish.connected")
        wait_until(lambda: converged([reader], daemon.db), what="the reader")
        before_rebuild = len(reader.lines)  # the reader may have met the room still empty
        assert daemon.stop() == 0
        done = subprocess.run([sys.executable, "-m", "pipelined", "rebuild", "--root",
                               str(daemon.root), "--db", str(daemon.db)],
                              capture_output=True, text=True, timeout=DEADLINE_S, check=False)
        assert done.returncode == 0, done.stderr
        daemon.start()
        stories.write("2_current", "2_story_after", name="after the rebuild")
        daemon.wait_row("2_story_after")
        publishing.wait_event("publish.database_replaced")
        wait_until(lambda: converged([reader], daemon.db), what="the reader after a rebuild")
        # The new file was empty until the rebuild committed: the room never was.
        assert all(shown(reader, before_rebuild))
    finally:
        reader.stop()
        assert publishing.stop() == 0
        daemon.stop()


def test_a_bearer_token_is_sent(stories: Stories, daemon: DaemonProcess,
                                tmp_path: Path) -> None:
    """Against a server that wants a token: without it, refused and retried (one warning);
    with it, connected."""
    stories.write("1_backlog", "1_story_login", name="login")
    daemon.start()
    token = "s3cret-token"
    server = YServer(NODE_DIR / "auth-server.mjs", TOKEN=token)
    token_file = tmp_path / "token"
    try:
        refused = Publishing(daemon, server.url())
        warning = refused.wait_event("publish.disconnected")
        assert "401" in warning["error"]
        assert refused.stop() == 0
        token_file.write_text(token + "\n", encoding="utf-8")
        allowed = Publishing(daemon, server.url(), "--token-file", str(token_file))
        allowed.wait_event("publish.connected")
        assert allowed.stop() == 0
    finally:
        server.stop()
        daemon.stop()


@pytest.mark.parametrize(("args", "words"), [
    ([], "give --server ws://HOST:PORT/ROOM"),
    (["--server", "http://127.0.0.1:1/x"], "expected ws://HOST:PORT/ROOM"),
    (["--server", "ws://127.0.0.1:1/x", "--token-file", "{tmp}/empty"], "not empty"),
    (["--server", "ws://[::1/x"], "publish_server"),
    (["--server", "ws://host:99999/x"], "Port out of range"),
    (["--server", "ws://"], "hostname isn't provided"),
])
def test_bad_settings_give_one_line_and_exit_78(stories: Stories, tmp_path: Path,
                                                args: list[str], words: str) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    db = tmp_path / "p.db"
    filled = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-m", "pipelined", "publish", "--root",
                           str(stories.root), "--db", str(db), *filled],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert done.returncode == 78, done.stderr
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_a_missing_database_is_one_line_and_a_restart_may_cure_it(stories: Stories,
                                                                  tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pipelined", "publish", "--root",
                           str(stories.root), "--db", str(tmp_path / "none.db"),
                           "--server", "ws://127.0.0.1:1/x"],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert done.returncode == 1 and done.stderr.startswith("Error: "), done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.slow  # 4,000 files, a checkout, a rebase: over about 6 s
def test_a_checkout_and_a_daemon_restart(stories: Stories, daemon: DaemonProcess,
                                        yserver: YServer) -> None:
    """A `git checkout` of 2,000 changes (moves, edits, deletes, creates), then a
    delete while the daemon is stopped: both readers end equal to the rows."""
    stages = ("1_backlog", "2_current", "4_merge")
    git(stories.root, "init", "-q", "-b", "main")
    for n in range(2400):
        stories.write(stages[n % 3], f"{n + 1}_story_item", name=f"item {n}")
    git(stories.root, "add", "-A")
    git(stories.root, "commit", "-qm", "main")
    git(stories.root, "checkout", "-q", "-b", "other")
    for n in range(0, 800):  # 800 moves
        git(stories.root, "mv", f"{stages[n % 3]}/{n + 1}_story_item.md",
            f"{stages[(n + 1) % 3]}/{n + 1}_story_item.md")
    for n in range(800, 1400):  # 600 edits
        stories.write(stages[n % 3], f"{n + 1}_story_item", name=f"item {n} on other")
    for n in range(1400, 1700):  # 300 deletes
        stories.path(stages[n % 3], f"{n + 1}_story_item").unlink()
    for n in range(300):  # 300 creates
        stories.write("1_backlog", f"{3000 + n}_story_new", name=f"new {n}")
    git(stories.root, "add", "-A")
    git(stories.root, "commit", "-qm", "other")
    git(stories.root, "checkout", "-q", "main")
    daemon.start()
    publishing = Publishing(daemon, yserver.url())
    readers = [node_reader(yserver.url()), python_reader(yserver.url())]
    try:
        publishing.wait_event("publish.connected")
        wait_until(lambda: converged(readers, daemon.db), what="the readers: main")
        git(stories.root, "checkout", "-q", "other")
        wait_until(lambda: "3299_story_new" in rows_state(daemon.db)
                   and "1401_story_item" not in rows_state(daemon.db),
                   what="the checkout in the rows")
        wait_until(lambda: converged(readers, daemon.db), what="the readers: the checkout")
        assert daemon.stop() == 0
        stories.path("1_backlog", "3010_story_new").unlink()  # while the daemon is down
        daemon.start()
        wait_until(lambda: "3010_story_new" not in rows_state(daemon.db), what="the delete")
        wait_until(lambda: converged(readers, daemon.db), what="the readers: after a restart")
        shown = last_state(readers[1])
        assert shown is not None and len(shown) == len(rows_state(daemon.db)) == 2399
    finally:
        for reader in readers:
            reader.stop()
        assert publishing.stop() == 0
        daemon.stop()


@pytest.mark.slow  # 96 edits, each waited for
def test_a_rebase_of_the_daemons_document_is_invisible(stories: Stories,
                                                       daemon: DaemonProcess,
                                                       yserver: YServer) -> None:
    """The daemon rebases its document onto a new epoch (a new client id, no history):
    the room, which never held the daemon's document, stays equal to the rows, and a
    story deleted before the rebase does not come back."""
    for n in range(3):
        stories.write("2_current", f"{n + 1}_story_c", name="start")
    stories.write("1_backlog", "9_story_gone", name="deleted before the rebase")
    daemon.start(env={"PIPELINED_COMPACT_UPDATES": "12"})
    publishing = Publishing(daemon, yserver.url())
    reader = node_reader(yserver.url())
    try:
        publishing.wait_event("publish.connected")
        stories.path("1_backlog", "9_story_gone").unlink()
        daemon.wait_gone("9_story_gone")
        for k in range(96):
            stories.write("2_current", f"{k % 3 + 1}_story_c", name=f"name {k}")
            daemon.wait_row(f"{k % 3 + 1}_story_c", lambda r, k=k: r["name"] == f"name {k}")
        assert any(e.get("rebased") for e in daemon.log_events()
                   if e.get("event") == "crdt.compacted")
        wait_until(lambda: converged([reader], daemon.db), what="the reader after a rebase")
        late = python_reader(yserver.url())  # a reader that joins after the rebase
        wait_until(lambda: converged([late], daemon.db), what="a new reader")
        shown = last_state(late)
        assert shown is not None and sorted(shown) == ["1_story_c", "2_story_c", "3_story_c"]
        late.stop()
    finally:
        reader.stop()
        assert publishing.stop() == 0
        daemon.stop()
