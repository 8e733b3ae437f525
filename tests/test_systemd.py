"""The systemd units: their settings, their exposure scores, `systemd-analyze
verify`, and whether the real daemon fits the sandbox they build.

No systemd runs here, so the sandbox is checked piece by piece: the exposure
score and unit syntax by `systemd-analyze` itself; SystemCallFilter= against
every system call the daemon makes (traced with strace); the file system
rules against every path it writes; MemoryDenyWriteExecute= by running it
under the kernel's own equivalent (PR_SET_MDWE); and the inotify-limit error
inside a user namespace with lowered limits.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from conftest import DEADLINE_S, Stories, userns_inotify_limits
from test_notify import NotifiedDaemon

pytestmark = pytest.mark.e2e  # the real daemon, or the units' commands, as subprocesses

UNITS = Path(__file__).resolve().parents[1] / "systemd"
SYSTEM_UNIT = UNITS / "pipelined.service"
USER_UNIT = UNITS / "pipelined-user.service"
SERVE_UNIT = UNITS / "pipelined-serve.service"
PUBLISH_UNIT = UNITS / "pipelined-publish.service"
SERVE_SOCKET = UNITS / "pipelined-serve.socket"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file; a key given twice keeps both values."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def analyze(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A private runtime folder and home for `systemd-analyze --user`."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.mkdir()
    return {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config")}


def stub_executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    path.chmod(0o755)


SANDBOX = {
    "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "ProtectSystem": "strict",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "PrivateNetwork": "yes",
    "PrivateUsers": "yes", "RestrictAddressFamilies": "AF_UNIX", "IPAddressDeny": "any",
    "MemoryDenyWriteExecute": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "ProtectControlGroups": "yes", "ProtectProc": "invisible",
    "ProcSubset": "pid", "LockPersonality": "yes", "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "Type": "notify",
    "Restart": "on-failure", "ExecReload": "/bin/kill -HUP $MAINPID",
}


class TestUnitFiles:
    @pytest.mark.parametrize("unit", [SYSTEM_UNIT, USER_UNIT], ids=["system", "user"])
    def test_full_sandbox_and_notify(self, unit: Path) -> None:
        """Both units: Type=notify with a watchdog, restart on failure, reload by SIGHUP,
        and every sandbox setting the issue lists."""
        settings = unit_settings(unit)
        for key, value in SANDBOX.items():
            assert settings.get(key) == [value], f"{unit.name}: {key}={settings.get(key)}"
        assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
        assert settings["WatchdogSec"] and settings["UMask"]
        assert settings["RestartPreventExitStatus"] == ["78"]  # EXIT_NEEDS_A_PERSON

    def test_system_unit(self) -> None:
        """A dedicated user, nothing of /home, the config file in /etc/pipelined."""
        settings = unit_settings(SYSTEM_UNIT)
        assert settings["User"] == ["pipelined"] and settings["Group"] == ["pipelined"]
        assert settings["ProtectHome"] == ["yes"]
        assert settings["Environment"] == ["PIPELINED_CONFIG=/etc/pipelined/config.toml"]
        assert settings["ReadWritePaths"] == ["/srv/stories"]  # the stories, nothing else
        assert settings["StateDirectory"] == ["pipelined"]  # /var/lib/pipelined

    def test_user_unit(self) -> None:
        """The home folder read-only but for the stories and the state folder, which the
        unit names itself: StateDirectory= is ~/.config before systemd 254, where the
        read commands do not look."""
        settings = unit_settings(USER_UNIT)
        assert settings["ProtectHome"] == ["read-only"]
        assert settings["ReadWritePaths"] == ["%h/stories %h/.local/state/pipelined"]
        assert "StateDirectory" not in settings
        assert settings["ExecStartPre"] == ["+/usr/bin/mkdir -p -m 0700 %h/.local/state/pipelined"]
        assert "User" not in settings  # a user manager runs it as that user

    def test_units_ship_in_the_sdist(self) -> None:
        """pyproject's sdist includes the systemd folder."""
        pyproject = (UNITS.parent / "pyproject.toml").read_text(encoding="utf-8")
        assert re.search(r'include = \[[^\]]*"systemd"', pyproject)


@needs_analyze
class TestSecurityScore:
    def test_system_unit_is_at_most_0_5(self, tmp_path: Path) -> None:
        """`systemd-analyze security --offline=yes --threshold=5` passes (score <= 0.5)."""
        done = analyze("security", "--offline=yes", "--threshold=5", str(SYSTEM_UNIT),
                       cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        score = re.search(r"Overall exposure level for pipelined.service: ([0-9.]+)",
                          done.stdout)
        assert score is not None and float(score.group(1)) <= 0.5

    def test_user_unit_is_at_most_1_0(self, tmp_path: Path, user_env: dict[str, str]) -> None:
        """`systemd-analyze --user security --offline=yes --threshold=10` passes."""
        done = analyze("--user", "security", "--offline=yes", "--threshold=10", str(USER_UNIT),
                       env=user_env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        score = re.search(r"Overall exposure level for pipelined-user.service: ([0-9.]+)",
                          done.stdout)
        assert score is not None and float(score.group(1)) <= 1.0

    def test_serve_unit_is_at_most_1_5(self, tmp_path: Path) -> None:
        """`pipelined serve`, socket-activated: no network of its own, the sandbox of the
        daemon; `--threshold=15` passes (score <= 1.5)."""
        done = analyze("security", "--offline=yes", "--threshold=15", str(SERVE_UNIT),
                       cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        score = re.search(r"Overall exposure level for pipelined-serve.service: ([0-9.]+)",
                          done.stdout)
        assert score is not None and float(score.group(1)) <= 1.5
        settings = unit_settings(SERVE_UNIT)
        assert settings["PrivateNetwork"] == ["yes"]
        assert settings["RestrictAddressFamilies"] == ["AF_UNIX"]
        assert unit_settings(SERVE_SOCKET)["ListenStream"] == ["127.0.0.1:8765"]

    def test_publish_unit_is_at_most_2_0(self, tmp_path: Path) -> None:
        """`pipelined publish` needs the network (the Yjs server), and nothing else of the
        daemon's: it only reads the database. `--threshold=20` passes (score <= 2.0)."""
        done = analyze("security", "--offline=yes", "--threshold=20", str(PUBLISH_UNIT),
                       cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        score = re.search(r"Overall exposure level for pipelined-publish.service: ([0-9.]+)",
                          done.stdout)
        assert score is not None and float(score.group(1)) <= 2.0, score
        settings = unit_settings(PUBLISH_UNIT)
        assert settings["ReadWritePaths"] == ["/var/lib/pipelined"]  # no story folder
        assert settings["ExecStart"] == ["/opt/pipelined/venv/bin/pipelined publish"]
        assert settings["RestartPreventExitStatus"] == ["78"]

    def test_the_threshold_really_fails_a_weak_unit(self, tmp_path: Path) -> None:
        """The score test can fail: a unit without the sandbox exits 1 at threshold 5."""
        weak = tmp_path / "weak.service"
        weak.write_text("[Service]\nType=notify\nExecStart=/bin/true\n", encoding="utf-8")
        done = analyze("security", "--offline=yes", "--threshold=5", str(weak), cwd=tmp_path)
        assert done.returncode == 1


@needs_analyze
class TestVerify:
    def test_system_unit_verifies_with_empty_stderr(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` prints nothing: no unknown key, no bad value.

        verify checks that ExecStart= is executable, so the copy points at a stub
        in a temporary /opt; every other line is the shipped file's.
        """
        venv = tmp_path / "opt" / "pipelined" / "venv"
        stub_executable(venv / "bin" / "pipelined")
        text = SYSTEM_UNIT.read_text(encoding="utf-8")
        assert text.count("/opt/pipelined/venv/bin/pipelined") == 1
        unit = tmp_path / "units" / "pipelined.service"
        unit.parent.mkdir()
        unit.write_text(text.replace("/opt/pipelined/venv", str(venv)), encoding="utf-8")
        done = analyze("verify", str(unit), cwd=tmp_path)
        assert done.stderr == ""
        assert done.returncode == 0

    def test_user_unit_verifies_with_empty_stderr(self, tmp_path: Path,
                                                  user_env: dict[str, str]) -> None:
        """`systemd-analyze --user verify` on the shipped file as is; %h is a temporary
        home holding a stub venv."""
        stub_executable(Path(user_env["HOME"]) / ".local/share/pipelined/venv/bin/pipelined")
        done = analyze("--user", "verify", str(USER_UNIT), env=user_env, cwd=tmp_path)
        assert done.stderr == ""
        assert done.returncode == 0

    def test_serve_units_verify_with_empty_stderr(self, tmp_path: Path) -> None:
        """The socket and its service, verified together (ExecStart= points at a stub)."""
        venv = tmp_path / "opt" / "pipelined" / "venv"
        stub_executable(venv / "bin" / "pipelined")
        units = tmp_path / "units"
        units.mkdir()
        for source in (SERVE_SOCKET, SERVE_UNIT):
            text = source.read_text(encoding="utf-8")
            (units / source.name).write_text(text.replace("/opt/pipelined/venv", str(venv)),
                                             encoding="utf-8")
        done = analyze("verify", str(units / SERVE_SOCKET.name), str(units / SERVE_UNIT.name),
                       cwd=tmp_path)
        assert done.stderr == ""
        assert done.returncode == 0

    def test_verify_output_is_checked(self, tmp_path: Path) -> None:
        """verify exits 0 on a typo; the typo shows only on stderr, which the tests read."""
        typo = tmp_path / "typo.service"
        typo.write_text("[Service]\nExecStart=/bin/true\nProtectSytem=strict\n",
                        encoding="utf-8")
        done = analyze("verify", str(typo), cwd=tmp_path)
        assert "ProtectSytem" in done.stderr


# -- the daemon inside the sandbox's rules ---------------------------------------------


@cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a systemd group such as @system-service, nested groups expanded."""
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "syscall-filter", name], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    calls: set[str] = set()
    for raw in out.splitlines()[1:]:
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        calls |= syscall_group(entry) if entry.startswith("@") else {entry}
    return frozenset(calls)


TRACED_CALL = re.compile(r"^\d+\s+([a-z0-9_]+)\((.*)")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC")
PATH_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


@pytest.fixture
def notified(stories: Stories, tmp_path: Path) -> Iterator[NotifiedDaemon]:
    proc = NotifiedDaemon(stories.root, tmp_path / "state" / "pipeline.db", tmp_path)
    yield proc
    proc.kill()


@pytest.mark.skipif(shutil.which("strace") is None or ANALYZE is None,
                    reason="needs strace and systemd-analyze")
class TestSystemCalls:
    def _traced_run(self, stories: Stories, notified: NotifiedDaemon, trace: Path,
                    run: int) -> None:
        """A run under strace: READY, an edit, a reload, watchdog pings, a clean stop."""
        notified.spawn(env={"WATCHDOG_USEC": "200000"},
                       prefix=("strace", "-f", "-qq", "-o", str(trace)))
        ready = notified.wait_line("READY=1", timeout=60)
        daemon_pid = ready.pid  # strace is the parent; the credentials name the daemon
        assert daemon_pid is not None and daemon_pid != notified.pid
        stories.write("2_current", "1_story_a", name=f"run {run}")
        notified.wait_row("1_story_a", lambda r: r["name"] == f"run {run}", timeout=60)
        mark = len(notified.received)
        os.kill(daemon_pid, signal.SIGHUP)
        reloading = notified.wait_line("RELOADING=1", start=mark, timeout=60)
        notified.wait_line("READY=1", start=notified.received.index(reloading), timeout=60)
        notified.wait_line("WATCHDOG=1", start=mark, timeout=60)
        os.kill(daemon_pid, signal.SIGTERM)
        assert notified.proc is not None
        assert notified.proc.wait(60) == 0  # strace exits with the daemon's status
        notified._close()

    def test_every_call_is_allowed_and_writes_stay_in_place(
            self, stories: Stories, notified: NotifiedDaemon, tmp_path: Path) -> None:
        """Every system call of a first import and of a restart (with an edit, a SIGHUP,
        watchdog pings and a stop) is in SystemCallFilter=@system-service minus
        @privileged and @resources; every file it writes is in the state directory
        (ProtectSystem=strict allows nothing else); it reads no /proc or /sys
        file (ProtectProc=invisible, ProcSubset=pid) but its own descriptors'
        links in /proc/self/fd, which story reads check (ProcSubset=pid keeps
        them), and the overcommit setting and CPU count glibc's malloc may look at."""
        for n in range(5):
            stories.write("1_backlog", f"{n + 10}_story_s", name=f"s {n}")
        traces = [tmp_path / "strace-first.txt", tmp_path / "strace-restart.txt"]
        for run, trace in enumerate(traces):
            self._traced_run(stories, notified, trace, run)

        allowed = (syscall_group("@system-service") - syscall_group("@privileged")
                   - syscall_group("@resources"))
        # SQLite gives a new -wal/-shm file its database's owner, only when running as
        # root (osGeteuid() == 0); the units run it as a user, and it ignores a failure.
        root_only = {"fchown"} if os.geteuid() == 0 else set()
        used: set[str] = set()
        written: set[Path] = set()
        special: set[str] = set()
        for trace in traces:
            for line in trace.read_text(errors="replace").splitlines():
                call = TRACED_CALL.match(line)
                if call is None:
                    continue
                name, rest = call.groups()
                used.add(name)
                path = PATH_ARG.search(rest)
                if path is None or name == "execve":
                    continue
                raw = path.group(1)
                if raw.startswith(("/proc/", "/sys/")):
                    # Not resolved: /proc/self here is the test's own process.
                    if OWN_FD.fullmatch(raw) is None and raw not in (GLIBC_MALLOC,
                                                                      GLIBC_ARENAS, OWN_MEMORY):
                        special.add(raw)
                    continue
                target = (tmp_path / raw).resolve()
                writes = name in ("mkdir", "mkdirat", "unlink", "unlinkat", "rename",
                                  "renameat", "renameat2", "rmdir", "truncate")
                if writes or (name in ("open", "openat") and WRITE_FLAGS.search(rest)):
                    written.add(target)
        # The trace covers the watcher, the writer and the notify socket.
        assert {"inotify_add_watch", "pwrite64", "sendto"} <= used
        assert used - allowed - root_only == set()
        state = notified.db.parent.resolve()
        # Byte code of a changed module is rewritten where it can be; read-only
        # under systemd (EROFS), which Python ignores.
        outside = {p for p in written if not p.is_relative_to(state)
                   and "__pycache__" not in p.parts}
        assert outside == set()
        assert special == set()


OWN_FD = re.compile(r"/proc/(self|[0-9]+)/fd/[0-9]+")  # layout.open_story's checks
# glibc's malloc reads it before it shrinks a thread's heap (arena.c,
# check_may_shrink_heap), depending on how memory happens to be laid out; under
# ProcSubset=pid the open fails and glibc simply does not shrink that way.
GLIBC_MALLOC = "/proc/sys/vm/overcommit_memory"
# glibc's malloc counts the CPUs (get_nprocs) the first time threads need more arenas
# than eight (arena.c, arena_get2); /sys stays readable under ProtectKernelTunables=.
GLIBC_ARENAS = "/sys/devices/system/cpu/online"
# The daemon's own RSS, logged around giving freed heap back (apply._trim_heap);
# its own /proc entry stays readable under ProcSubset=pid and ProtectProc=invisible.
OWN_MEMORY = "/proc/self/statm"


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(99)
os.execv(sys.argv[1], sys.argv[1:])
"""


def _kernel_has_mdwe() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes, sys; "
         f"sys.exit(ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0))"],
        check=False, timeout=DEADLINE_S)
    return probe.returncode == 0


class TestMemoryDenyWriteExecute:
    @pytest.mark.skipif(not _kernel_has_mdwe(),
                        reason="the kernel has no PR_SET_MDWE (Linux >= 6.3)")
    def test_daemon_runs_without_writable_executable_memory(
            self, stories: Stories, notified: NotifiedDaemon, tmp_path: Path) -> None:
        """Under PR_SET_MDWE (what MemoryDenyWriteExecute= enforces, kept across exec)
        the daemon imports, loads pycrdt, syncs, restarts and stops cleanly."""
        wrapper = tmp_path / "mdwe.py"
        wrapper.write_text(MDWE_WRAPPER, encoding="utf-8")
        wx_map = ("import mmap\ntry:\n    mmap.mmap(-1, 4096, prot=7)\nexcept PermissionError:\n"
                  "    raise SystemExit(0)\nraise SystemExit(1)\n")
        refused = subprocess.run([sys.executable, str(wrapper), sys.executable, "-c", wx_map],
                                 check=False, timeout=DEADLINE_S)
        assert refused.returncode == 0, "the wrapper does not refuse W+X memory"
        stories.write("1_backlog", "1_story_a", name="a")
        for run in range(2):  # a first import, then a restart that loads the state
            notified.spawn(prefix=(sys.executable, str(wrapper)))
            notified.wait_line("READY=1")
            stories.write("2_current", f"{run + 2}_story_b", name=f"b {run}")
            notified.wait_row(f"{run + 2}_story_b")
            assert notified.stop() == 0
        assert notified.row("1_story_a") is not None
        assert "Traceback" not in notified.log_tail(400)


@pytest.mark.skipif(not userns_inotify_limits(),
                    reason="needs unprivileged user namespaces with their own inotify limits")
class TestInotifyLimits:
    """The kernel's per-user inotify limits, lowered inside a user namespace only."""

    def _run(self, stories: Stories, tmp_path: Path,
             setting: str) -> subprocess.CompletedProcess[str]:
        script = f'echo 0 > /proc/sys/user/{setting} && exec "$@"'
        if setting == "max_inotify_watches":
            script = f'echo 2 > /proc/sys/user/{setting} && exec "$@"'  # the root and one stage
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINED_")}
        env.pop("NOTIFY_SOCKET", None)
        return subprocess.run(
            ["unshare", "-U", "-r", "sh", "-c", script, "sh", sys.executable, "-m", "pipelined",
             "run", "--root", str(stories.root), "--db", str(tmp_path / "state" / "p.db")],
            capture_output=True, text=True, check=False, timeout=DEADLINE_S, env=env)

    def test_watch_limit_names_max_user_watches(self, stories: Stories, tmp_path: Path) -> None:
        """ENOSPC from inotify_add_watch: one line naming fs.inotify.max_user_watches,
        exit 1, no traceback."""
        done = self._run(stories, tmp_path, "max_inotify_watches")
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr
        assert "inotify watch limit is reached (ENOSPC)" in errors[0]
        assert "raise the sysctl fs.inotify.max_user_watches" in errors[0]

    def test_instance_limit_names_max_user_instances(self, stories: Stories,
                                                     tmp_path: Path) -> None:
        """EMFILE from inotify_init: one line naming fs.inotify.max_user_instances."""
        done = self._run(stories, tmp_path, "max_inotify_instances")
        assert done.returncode == 1
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in done.stderr
        assert "inotify instance limit is reached (EMFILE)" in errors[0]
        assert "raise the sysctl fs.inotify.max_user_instances" in errors[0]
