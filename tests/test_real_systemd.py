"""The units under the real systemd (252 here), installed as docs/operations.md says.

Each test boots its own systemd in private namespaces (tests/systemd_ns.py),
installs the unit from systemd/ into that systemd's /run, and drives it with
`systemctl` as an operator would. Skipped, with the reason, where root or
systemd is missing; CI has both. Slow: the first test builds the venv.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from systemd_ns import (
    REPO,
    VENV,
    Namespace,
    Site,
    Systemctl,
    build_wheel,
    ensure_system_user,
    install_venv,
    namespace,
    poll,
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
        story = poll(lambda: show_story(ns, site, "2_story_edit"), 30, "the edit in the db")
        assert story["name"] == "Edited" and story["stage"] == "2_current"

        debug_lines = lambda: [e for e in daemon_entries(ns)  # noqa: E731
                               if e.get("PRIORITY") == "7"]
        assert debug_lines() == []  # log_level info
        site.configure(log_level="debug")
        systemctl("reload", "pipelined")
        poll(lambda: pid1_lines(ns, r"RELOADING=1, MONOTONIC_USEC=\d+"), 30, "RELOADING=1")
        poll(lambda: pid1_lines(ns, r"Changed reload -> running"), 30, "the reload's end")
        assert ns.show("pipelined", "ActiveState")["ActiveState"] == "active"
        site.write("2_current", "2_story_edit", "Edited again")
        lines = poll(debug_lines, 30, "a debug line after the reload")
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
        warnings = poll(lambda: ns.journal("-u", "pipelined", "-p", "warning"), 30,
                        "a warning in the journal")
        events = [json.loads(e["MESSAGE"])["event"] for e in warnings]
        assert events == ["story.parse_error"], events
        everything = ns.journal("-u", "pipelined")
        info = [e for e in everything if '"story.created"' in str(e.get("MESSAGE"))]
        assert info and {e["PRIORITY"] for e in info} == {"6"}, info
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
        poll(lambda: main_pid(ns) not in (0, first)
             and ns.show("pipelined", "ActiveState")["ActiveState"] == "active", 30,
             "a restarted daemon")
        took = time.monotonic() - began
        assert pid1_lines(ns, r"Failed with result 'watchdog'"), "not killed by the watchdog"
        assert ns.show("pipelined", "NRestarts")["NRestarts"] == "1"
        assert took < 3 + 2 + 10, f"restarted {took:.1f} s after the stop"  # + RestartSec
        story = poll(lambda: show_story(ns, site, "3_story_during"), 30, "the story")
        assert story["name"] == "Written while stopped"

    def test_kill_9_is_restarted(self, ns: Namespace, site: Site) -> None:
        """Restart=on-failure: a SIGKILLed daemon comes back, in sync."""
        site.write("1_backlog", "1_story_a", "A")
        start_daemon(ns, site)
        first = main_pid(ns)
        ns.run("kill", "-KILL", str(first))
        poll(lambda: main_pid(ns) not in (0, first)
             and ns.show("pipelined", "StatusText")["StatusText"].startswith("in sync"), 30,
             "a restarted daemon, in sync")
        assert ns.show("pipelined", "NRestarts")["NRestarts"] == "1"
        site.write("1_backlog", "2_story_after", "After")
        assert poll(lambda: show_story(ns, site, "2_story_after"), 30, "the story")

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
        poll(lambda: ns.show("pipelined", "ActiveState")["ActiveState"] == "failed", 30,
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
        """20,000 stories with TimeoutStartSec=5s: EXTEND_TIMEOUT_USEC keeps the start
        alive past 5 s, and the unit becomes active with every story."""
        for n in range(1, 20_001):
            stage = ("1_backlog", "2_current", "4_merge")[n % 3]
            (site.root / stage / f"{n}_story_s{n}.md").write_text(
                f"---\nname: Story {n}\nagent: a{n % 7}\n---\n" + f"word{n} " * 200 + "\n",
                encoding="utf-8")
        ns.debug_pid1_to_journal()
        began = time.monotonic()
        start_daemon(ns, site, "[Service]\nTimeoutStartSec=5s\n")
        took = time.monotonic() - began
        state = ns.show("pipelined", "ActiveState", "StatusText")
        assert state["ActiveState"] == "active", state
        assert state["StatusText"].startswith("in sync: 20000 "), state
        assert pid1_lines(ns, r"EXTEND_TIMEOUT_USEC="), "no EXTEND_TIMEOUT_USEC reached systemd"
        assert took > 5, f"the import took {took:.1f} s: too fast to prove the extension"
