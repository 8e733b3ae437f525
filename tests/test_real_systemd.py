"""The units under the real systemd (252 here), installed as docs/operations.md says.

Each test boots its own systemd in private namespaces (tests/systemd_ns.py),
installs the unit from systemd/ into that systemd's /run, and drives it with
`systemctl` as an operator would. Skipped, with the reason, where root or
systemd is missing; CI has both. Slow: the first test builds the venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from systemd_ns import (
    REPO,
    TEST_USER,
    VENV,
    Namespace,
    Site,
    Systemctl,
    build_wheel,
    ensure_system_user,
    ensure_test_user,
    install_venv,
    namespace,
    unavailable,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None,
                                                   reason=unavailable() or "")]

UNITS = REPO / "systemd"
PIPELINED = str(VENV / "bin" / "pipelined")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def system_venv(wheel: Path) -> Path:
    """/opt/pipelined/venv from the system Python, with this checkout's wheel."""
    ensure_system_user()
    install_venv(VENV, wheel)
    return VENV


@pytest.fixture
def site(system_venv: Path) -> Iterator[Site]:
    site = Site()
    try:
        yield site
    finally:
        site.remove()


@pytest.fixture
def ns() -> Iterator[Namespace]:
    with namespace() as booted:
        yield booted


def install_unit(ns: Namespace, unit: str, *drop_ins: str) -> None:
    """systemd/<unit> into the namespace's /run/systemd/system, with drop-ins."""
    ns.write(f"/run/systemd/system/{unit}", (UNITS / unit).read_text(encoding="utf-8"))
    for n, text in enumerate(drop_ins):
        ns.write(f"/run/systemd/system/{unit}.d/{50 + n}-test.conf", text)
    ns.run("systemctl", "daemon-reload")


def start_daemon(ns: Namespace, site: Site, *drop_ins: str) -> Systemctl:
    site.share()
    install_unit(ns, "pipelined.service", site.drop_in(), *drop_ins)
    systemctl = Systemctl(ns)
    systemctl("start", "pipelined", timeout=120)  # Type=notify: returns at READY=1
    return systemctl


def show_story(ns: Namespace, site: Site, story_id: str) -> dict[str, object] | None:
    """`pipelined show ID --json` as the group's reader would run it."""
    done = ns.run(PIPELINED, "show", story_id, "--json", user="pipelined",
                  env={"PIPELINED_CONFIG": str(site.config)}, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def main_pid(ns: Namespace) -> int:
    return int(ns.show("pipelined", "MainPID")["MainPID"])


def daemon_entries(ns: Namespace, *match: str) -> list[dict[str, object]]:
    """The journal entries the daemon wrote (not PID 1's lines about its unit). By
    SYSLOG_IDENTIFIER: with PID 1 logging at debug into the journal, systemd 252's
    journald leaves _SYSTEMD_UNIT off the service's stream lines here."""
    return ns.journal("SYSLOG_IDENTIFIER=pipelined", *match)


def pid1_lines(ns: Namespace, pattern: str) -> list[str]:
    """PID 1's journal lines about pipelined.service matching `pattern`."""
    return [m for m in ns.messages("_PID=1", "UNIT=pipelined.service")
            if re.search(pattern, m)]


class TestSystemUnit:
    def test_start_in_sync_edit_reload_stop(self, ns: Namespace, site: Site) -> None:
        """start -> active (running), "in sync: ..."; an edit reaches the database;
        reload -> RELOADING=1 + MONOTONIC_USEC, READY=1, and the new log level; stop ->
        STOPPING=1 and exit 0, well within TimeoutStopSec."""
        site.write("1_backlog", "1_story_login", "Login")
        ns.debug_pid1_to_journal()
        systemctl = start_daemon(ns, site)
        state = ns.show("pipelined", "ActiveState", "SubState", "StatusText")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
        assert state["StatusText"].startswith("in sync: 1 "), state

        site.write("2_current", "2_story_edit", "Edited")
        story = wait_until(lambda: show_story(ns, site, "2_story_edit"), 30, "the edit in the db")
        assert story["name"] == "Edited" and story["stage"] == "2_current"

        debug_lines = lambda: [e for e in daemon_entries(ns)  # noqa: E731
                               if e.get("PRIORITY") == "7"]
        assert debug_lines() == []  # log_level info
        site.configure(log_level="debug")
        systemctl("reload", "pipelined")
        wait_until(lambda: pid1_lines(ns, r"RELOADING=1, MONOTONIC_USEC=\d+"), 30, "RELOADING=1")
        wait_until(lambda: pid1_lines(ns, r"Changed reload -> running"), 30, "the reload's end")
        assert ns.show("pipelined", "ActiveState")["ActiveState"] == "active"
        site.write("2_current", "2_story_edit", "Edited again")
        lines = wait_until(debug_lines, 30, "a debug line after the reload")
        assert any(json.loads(e["MESSAGE"][e["MESSAGE"].index("{"):])["event"] == "sync.flushed"
                   for e in lines), lines

        began = time.monotonic()
        systemctl("stop", "pipelined", timeout=60)
        took = time.monotonic() - began
        after = ns.show("pipelined", "ActiveState", "Result", "ExecMainStatus",
                        "TimeoutStopUSec")
        assert after["ActiveState"] == "inactive" and after["Result"] == "success", after
        assert after["ExecMainStatus"] == "0", after
        assert pid1_lines(ns, r"STOPPING=1"), "no STOPPING=1 reached systemd"
        assert took < 10, f"stop took {took:.1f} s (TimeoutStopSec={after['TimeoutStopUSec']})"

    def test_log_levels_are_journal_priorities(self, ns: Namespace, site: Site) -> None:
        """`journalctl -p warning -u pipelined` shows the broken story's warning and none
        of the info lines; the info lines are priority 6."""
        site.write("1_backlog", "1_story_ok", "Fine")
        bad = site.root / "1_backlog" / "2_story_bad.md"
        bad.write_text("---\nname: [unclosed\n---\nBody\n", encoding="utf-8")
        start_daemon(ns, site)
        warnings = wait_until(lambda: ns.journal("-u", "pipelined", "-p", "warning"), 30,
                              "a warning in the journal")
        events = [json.loads(e["MESSAGE"])["event"] for e in warnings]
        assert events == ["story.parse_error"], events
        everything = ns.journal("-u", "pipelined")
        info = [e for e in everything if '"story.created"' in str(e.get("MESSAGE"))]
        assert info and {e["PRIORITY"] for e in info} == {"6"}, info
        story = [json.loads(m)["id"] for m in ns.messages("-u", "pipelined", "-g", "1_story_ok")]
        assert story == ["1_story_ok"], story  # docs/operations.md: one story's lines
        assert all(not str(e.get("MESSAGE", "")).startswith("<") for e in everything)

    def test_watchdog_kills_a_stopped_daemon_and_nothing_is_lost(
            self, ns: Namespace, site: Site) -> None:
        """SIGSTOP: no WATCHDOG=1 for WatchdogSec (3 s in a drop-in), systemd kills and
        restarts it; a story written meanwhile is in the database after."""
        site.write("1_backlog", "1_story_a", "A")
        start_daemon(ns, site, "[Service]\nWatchdogSec=3s\n")
        ns.debug_pid1_to_journal()
        first = main_pid(ns)
        began = time.monotonic()
        ns.run("kill", "-STOP", str(first))
        site.write("2_current", "3_story_during", "Written while stopped")
        wait_until(lambda: main_pid(ns) not in (0, first)
                   and ns.show("pipelined", "ActiveState")["ActiveState"] == "active", 30,
                   "a restarted daemon")
        took = time.monotonic() - began
        assert pid1_lines(ns, r"Failed with result 'watchdog'"), "not killed by the watchdog"
        assert ns.show("pipelined", "NRestarts")["NRestarts"] == "1"
        assert took < 3 + 2 + 10, f"restarted {took:.1f} s after the stop"  # + RestartSec
        story = wait_until(lambda: show_story(ns, site, "3_story_during"), 30, "the story")
        assert story["name"] == "Written while stopped"

    def test_kill_9_is_restarted(self, ns: Namespace, site: Site) -> None:
        """Restart=on-failure: a SIGKILLed daemon comes back, in sync."""
        site.write("1_backlog", "1_story_a", "A")
        start_daemon(ns, site)
        first = main_pid(ns)
        ns.run("kill", "-KILL", str(first))
        wait_until(lambda: main_pid(ns) not in (0, first)
                   and ns.show("pipelined", "StatusText")["StatusText"].startswith("in sync"),
                   30, "a restarted daemon, in sync")
        assert ns.show("pipelined", "NRestarts")["NRestarts"] == "1"
        site.write("1_backlog", "2_story_after", "After")
        assert wait_until(lambda: show_story(ns, site, "2_story_after"), 30, "the story")

    def test_corrupt_database_fails_once_with_one_line(self, ns: Namespace,
                                                       site: Site) -> None:
        """A damaged database: exit 78, which RestartPreventExitStatus= keeps from a
        restart loop; `failed`, and one line at priority error says why."""
        site.write("1_backlog", "1_story_a", "A")
        site.db.parent.mkdir(parents=True, exist_ok=True)
        site.db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
        site.share()
        install_unit(ns, "pipelined.service", site.drop_in())
        started = Systemctl(ns)("start", "pipelined", check=False, timeout=120)
        assert started.returncode != 0
        wait_until(lambda: ns.show("pipelined", "ActiveState")["ActiveState"] == "failed", 30,
                   "the unit failed")
        state = ns.show("pipelined", "ExecMainStatus", "NRestarts", "Result")
        assert state == {"ExecMainStatus": "78", "NRestarts": "0", "Result": "exit-code"}, state
        errors = ns.messages("-u", "pipelined", "-p", "err")
        ours = [m for m in errors if "Error:" in m]
        assert len(ours) == 1 and str(site.db) in ours[0], errors
        # No restart comes later either (RestartSec=2s has passed by the time we look).
        assert ns.show("pipelined", "NRestarts", "ActiveState") == {
            "NRestarts": "0", "ActiveState": "failed"}

    def test_long_first_import_extends_the_start_timeout(self, ns: Namespace,
                                                         site: Site) -> None:
        """20,000 stories with TimeoutStartSec=3s: EXTEND_TIMEOUT_USEC keeps the start
        alive past 3 s, and the unit becomes active with every story. The sandbox lets
        the parse-ahead worker run: it answered every chunk after the first."""
        for n in range(1, 20_001):
            stage = ("1_backlog", "2_current", "4_merge")[n % 3]
            (site.root / stage / f"{n}_story_s{n}.md").write_text(
                f"---\nname: Story {n}\nagent: a{n % 7}\n---\n" + f"word{n} " * 200 + "\n",
                encoding="utf-8")
        ns.debug_pid1_to_journal()
        began = time.monotonic()
        start_daemon(ns, site, "[Service]\nTimeoutStartSec=3s\n")
        took = time.monotonic() - began
        state = ns.show("pipelined", "ActiveState", "StatusText")
        assert state["ActiveState"] == "active", state
        assert state["StatusText"].startswith("in sync: 20000 "), state
        assert pid1_lines(ns, r"EXTEND_TIMEOUT_USEC="), "no EXTEND_TIMEOUT_USEC reached systemd"
        assert took > 3, f"the import took {took:.1f} s: too fast to prove the extension"
        events = [json.loads(str(e["MESSAGE"])) for e in daemon_entries(ns)
                  if str(e.get("MESSAGE", "")).startswith("{")]
        (startup,) = [e for e in events if e["event"] == "daemon.startup"]
        assert startup["parsed_ahead"] == (19 if len(os.sched_getaffinity(0)) > 1 else 0), startup
        assert not [e for e in events if e["event"] == "parse_ahead.failed"]

        def trimmed() -> list[dict[str, object]]:
            """The heap given back once idle: ctypes' call works under the sandbox
            (MemoryDenyWriteExecute, the system call filter), and /proc/self/statm reads."""
            return [e for e in (json.loads(str(m["MESSAGE"])) for m in daemon_entries(ns)
                                if str(m.get("MESSAGE", "")).startswith("{"))
                    if e["event"] == "daemon.heap_trimmed"]
        (trim,) = wait_until(trimmed, 60, "the heap trimmed once the daemon is idle")
        assert isinstance(trim["rss_mib"], int), trim


HTTP = """
import json, sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
request = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    print(response.status, response.read().decode())
"""


class TestServeUnit:
    def test_the_first_request_starts_serve_on_the_inherited_socket(
            self, ns: Namespace, site: Site) -> None:
        """pipelined-serve.socket listens on 127.0.0.1:8765; the first connection starts
        the service (PrivateNetwork=yes: the inherited socket is its only way out), which
        answers the API and moves a story by renaming its file."""
        site.write("1_backlog", "1_story_a", "A")
        start_daemon(ns, site)
        install_unit(ns, "pipelined-serve.service",
                     "[Service]\n"
                     f"Environment=PIPELINED_CONFIG={site.config}\n"
                     "ReadWritePaths=\n"
                     f"ReadWritePaths={site.root} /var/lib/pipelined\n"
                     f"WorkingDirectory={site.root}\n")
        install_unit(ns, "pipelined-serve.socket")
        systemctl = Systemctl(ns)
        systemctl("start", "pipelined-serve.socket")
        assert ns.show("pipelined-serve.service", "ActiveState")["ActiveState"] == "inactive"

        def http(method: str, path: str, body: str | None = None) -> tuple[int, object]:
            done = ns.run(str(VENV / "bin" / "python"), "-c", HTTP, method,
                          f"http://127.0.0.1:8765{path}", *([body] if body else []))
            status, text = done.stdout.split(" ", 1)
            return int(status), json.loads(text)

        status, story = http("GET", "/api/stories/1_story_a")
        assert status == 200 and story["name"] == "A"  # type: ignore[index]
        assert ns.show("pipelined-serve.service", "ActiveState")["ActiveState"] == "active"
        state = ns.show("pipelined-serve.service", "NRestarts", "MainPID")
        assert state["NRestarts"] == "0" and state["MainPID"] != "0", state
        status, moved = http("POST", "/api/stories/1_story_a/move", '{"stage": "2_current"}')
        assert status == 200, moved
        wait_until((site.root / "2_current" / "1_story_a.md").exists, 30, "the renamed file")
        assert not (site.root / "1_backlog" / "1_story_a.md").exists()
        wait_until(lambda: (show_story(ns, site, "1_story_a") or {}).get("stage")
                   == "2_current", 30, "the move in the database")
        systemctl("stop", "pipelined-serve.service", "pipelined-serve.socket")
        after = ns.show("pipelined-serve.service", "Result", "ActiveState")
        assert after == {"Result": "success", "ActiveState": "inactive"}, after


# One look at a room, as any pycrdt reader would take it: its `stories` map as JSON.
READ_ROOM = """
import json, sys
import anyio, pycrdt
from websockets.asyncio.client import connect
from pipelined.publish import FIELDS, ROOT, WebsocketChannel, values_of

async def main(url):
    doc = pycrdt.Doc()
    stories = doc.get(ROOT, type=pycrdt.Map)
    async with connect(url) as websocket:
        async with pycrdt.Provider(doc, WebsocketChannel(websocket, url)) as provider:
            with anyio.fail_after(20):
                await provider.synced.wait()
            print(json.dumps({str(k): dict(zip(FIELDS, values_of(v)))
                              for k, v in stories.items()}))

anyio.run(main, sys.argv[1])
"""
NODE = shutil.which("node")
Y_SERVER = REPO / "tests/node/node_modules/@y/websocket-server/src/server.js"


class TestPublishUnit:
    @pytest.mark.skipif(NODE is None or not Y_SERVER.exists(),
                        reason="needs node and `npm ci --prefix tests/node`")
    def test_publish_keeps_the_room_and_stops_cleanly(self, ns: Namespace, site: Site) -> None:
        """pipelined-publish.service, named a room in the config as docs/operations.md
        says, keeps the official Node server's room equal to the stories (an edit
        arrives), survives the server's restart, and stops with Result=success."""
        site.write("1_backlog", "1_story_a", "A")
        start_daemon(ns, site)
        url = "ws://127.0.0.1:1234/pipeline"

        def start_server() -> None:
            ns.run("systemd-run", "--unit=yjs-server", "--quiet", "-E", "HOST=127.0.0.1",
                   "-E", "PORT=1234", str(NODE), str(Y_SERVER))

        def room() -> dict[str, dict[str, object]] | None:
            done = ns.run(str(VENV / "bin" / "python"), "-c", READ_ROOM, url, check=False)
            return json.loads(done.stdout) if done.returncode == 0 else None

        def name_in_room() -> object:
            return ((room() or {}).get("1_story_a") or {}).get("name")

        start_server()
        site.configure(publish_server=url)
        install_unit(ns, "pipelined-publish.service",
                     f"[Service]\nEnvironment=PIPELINED_CONFIG={site.config}\n")
        systemctl = Systemctl(ns)
        systemctl("start", "pipelined-publish")
        wait_until(lambda: name_in_room() == "A", 60, "the story in the room")
        site.write("1_backlog", "1_story_a", "A edited")
        wait_until(lambda: name_in_room() == "A edited", 60, "the edit in the room")
        ns.run("systemctl", "stop", "yjs-server")  # in memory: it comes back empty
        start_server()
        wait_until(lambda: name_in_room() == "A edited", 60, "the room after a server restart")
        state = ns.show("pipelined-publish.service", "ActiveState", "NRestarts")
        assert state == {"ActiveState": "active", "NRestarts": "0"}, state
        systemctl("stop", "pipelined-publish.service")
        after = ns.show("pipelined-publish.service", "Result", "ExecMainStatus")
        assert after == {"Result": "success", "ExecMainStatus": "0"}, after


# The shipped drop-in for user managers that cannot give a unit a user namespace.
NO_USERNS = UNITS / "pipelined-user-without-userns.conf"


class TestUserUnit:
    def test_start_in_sync_edit_reload_stop(self, ns: Namespace, wheel: Path) -> None:
        """The install steps for one person: a venv in ~/.local/share, the unit in
        ~/.config/systemd/user, the config's root; under the real user manager it starts,
        syncs, reloads and stops, and `pipelined show` run by that user in ~/stories, with
        no flags, finds the database the service writes (~/.local/state/pipelined)."""
        user = ensure_test_user()
        home = Path(user.pw_dir)
        install_venv(home / ".local/share/pipelined/venv", wheel, owner=TEST_USER)
        as_user = {"HOME": str(home), "XDG_RUNTIME_DIR": f"/run/user/{user.pw_uid}"}

        def put(path: Path, text: str) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

        owned = [home / "stories", home / ".local/state/pipelined",
                 home / ".config/systemd/user", home / ".config/pipelined"]
        for path in owned:
            shutil.rmtree(path, ignore_errors=True)
        try:
            for stage in ("1_backlog", "2_current", "4_merge"):
                (home / "stories" / stage).mkdir(parents=True)
            put(home / "stories/1_backlog/1_story_a.md", "---\nname: A\n---\nBody\n")
            put(home / ".config/pipelined/config.toml", f'root = "{home}/stories"\n')
            put(home / ".config/systemd/user/pipelined.service",
                (UNITS / "pipelined-user.service").read_text(encoding="utf-8"))
            subprocess.run(["chown", "-R", f"{TEST_USER}:", str(home)], check=True, timeout=60)

            ns.run("systemctl", "start", f"user@{user.pw_uid}.service")
            systemctl = Systemctl(ns, user=TEST_USER, uid=user.pw_uid)
            probe = ns.run("systemd-run", "--user", "--wait", "--quiet", "-p",
                           "PrivateUsers=yes", "/bin/true", user=TEST_USER, env=as_user,
                           check=False)
            if probe.returncode != 0:
                print("user namespaces are refused to user units here (`systemd-run --user "
                      f"-p PrivateUsers=yes /bin/true` exited {probe.returncode}): testing "
                      f"the user unit with {NO_USERNS.name}")
                put(home / ".config/systemd/user/pipelined.service.d" / NO_USERNS.name,
                    NO_USERNS.read_text(encoding="utf-8"))
                subprocess.run(["chown", "-R", f"{TEST_USER}:", str(home / ".config")],
                               check=True, timeout=60)
            systemctl("daemon-reload")
            systemctl("start", "pipelined", timeout=120)
            state = ns.show("pipelined", "ActiveState", "StatusText", user=systemctl)
            assert state["ActiveState"] == "active", state
            assert state["StatusText"].startswith("in sync: 1 "), state

            put(home / "stories/2_current/2_story_b.md", "---\nname: B\n---\nBody\n")
            shutil.chown(home / "stories/2_current/2_story_b.md", TEST_USER)

            def shown() -> dict[str, object] | None:
                done = ns.run("sh", "-c", 'cd "$HOME/stories" && "$1" show 2_story_b --json',
                              "sh", str(home / ".local/share/pipelined/venv/bin/pipelined"),
                              user=TEST_USER, env=as_user, check=False)
                return json.loads(done.stdout) if done.returncode == 0 else None

            story = wait_until(shown, 30, "the edit, seen by the user's own `pipelined show`")
            assert story["name"] == "B"
            assert list((home / ".local/state/pipelined").glob("*.db"))
            assert not list((home / ".config/pipelined").glob("*.db"))

            put(home / ".config/pipelined/config.toml",
                f'root = "{home}/stories"\nlog_level = "debug"\n')
            systemctl("reload", "pipelined")
            wait_until(lambda: any('"daemon.reloaded"' in m for m in ns.messages(
                "SYSLOG_IDENTIFIER=pipelined")), 30, "daemon.reloaded")
            assert ns.show("pipelined", "ActiveState", user=systemctl)["ActiveState"] == "active"

            systemctl("stop", "pipelined", timeout=90)
            after = ns.show("pipelined", "ActiveState", "Result", "ExecMainStatus",
                            user=systemctl)
            assert after == {"ActiveState": "inactive", "Result": "success",
                             "ExecMainStatus": "0"}, after
        finally:
            for path in owned:
                shutil.rmtree(path, ignore_errors=True)
