"""The real systemd for tests: `systemd-ns` namespaces, and pipelined installed as a user would.

`../shared/tools/systemd-ns` (beside the clone, as in CI; or
`$PIPELINED_SYSTEMD_NS`) boots the machine's own systemd as PID 1 of private PID,
mount, network (loopback only), UTS and IPC namespaces with their own `/run`,
`/tmp` and `/var/tmp`. Everything else is the host's: the venv in /opt, the
users, /srv and /var/lib. So the tests keep to their own corners:

- units and drop-ins go to the namespace's own `/run/systemd/system` (and
  `/run/user/UID/systemd/user` is not needed: user units live in the test
  user's home), so parallel tests never see each other's units;
- each test's stories, config and database are under `/srv/pipelined-tests/<id>`
  and `/var/lib/pipelined/<id>.db`, removed afterwards;
- the venv at `/opt/pipelined/venv` (the path the system unit names) is built
  once from the system Python and reused; it carries a marker file, and a venv
  there without the marker is a real install, which makes the tests skip
  rather than touch it.

Every wait has a deadline; a namespace is always powered off, also when a
test fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("PIPELINED_SYSTEMD_NS",
                           REPO.parent / "shared" / "tools" / "systemd-ns"))
SYSTEM_PYTHON = Path("/usr/bin/python3")
VENV = Path("/opt/pipelined/venv")
MARKER = ".pipelined-test-venv"
TEST_USER = "pipelined-tester"
WORK = Path("/srv/pipelined-tests")


def unavailable() -> str | None:
    """Why the real-systemd tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (systemd-ns boots systemd in new namespaces)"
    if not TOOL.is_file():
        return f"no systemd-ns at {TOOL} (set PIPELINED_SYSTEMD_NS)"
    if not Path("/lib/systemd/systemd").is_file():
        return "systemd is not installed"
    if not SYSTEM_PYTHON.is_file():
        return f"no system Python at {SYSTEM_PYTHON}"
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c",
                            "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
                           capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} is older than 3.11 or has no venv/ensurepip"
    return None


class Namespace:
    """One booted systemd; `run` executes a command inside it."""

    def __init__(self) -> None:
        started = subprocess.run([str(TOOL), "start"], capture_output=True, text=True,
                                 timeout=60, check=False)
        if started.returncode != 0:
            pytest.fail(f"systemd-ns start failed: {started.stderr.strip()}")
        self.pid = started.stdout.strip()

    def stop(self) -> None:
        subprocess.run([str(TOOL), "stop", self.pid], capture_output=True, timeout=60,
                       check=False)

    def run(self, *cmd: str, timeout: float = 60, check: bool = True,
            user: str | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """`cmd` inside the namespace (as `user`, through runuser, if given)."""
        prefix: list[str] = []
        if user is not None:
            prefix = ["runuser", "-u", user, "--"]
        if env:
            prefix += ["env", *(f"{k}={v}" for k, v in env.items())]
        done = subprocess.run([str(TOOL), "run", self.pid, *prefix, *cmd], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {done.returncode}: "
                        f"{done.stdout.strip()} {done.stderr.strip()}")
        return done

    def write(self, path: str, text: str) -> None:
        """A file of the namespace's own (its /run is not the host's)."""
        done = subprocess.run([str(TOOL), "run", self.pid, "sh", "-c",
                               'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
                              input=text, capture_output=True, text=True, timeout=30,
                              check=False)
        if done.returncode != 0:
            pytest.fail(f"cannot write {path} in the namespace: {done.stderr.strip()}")

    def show(self, unit: str, *props: str, user: Systemctl | None = None) -> dict[str, str]:
        """`systemctl show` properties of `unit`."""
        ctl = user or Systemctl(self)
        out = ctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *match: str) -> list[dict[str, Any]]:
        """The journal's entries matching `match` (journalctl arguments), as JSON."""
        args = ["journalctl", "--no-pager", "-o", "json", *match]
        out = self.run(*args, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def messages(self, *match: str) -> list[str]:
        return [str(e.get("MESSAGE", "")) for e in self.journal(*match)]

    def debug_pid1_to_journal(self) -> None:
        """PID 1's own debug lines ("Got notification message …") into the journal."""
        self.run("systemd-analyze", "log-target", "journal")
        self.run("systemd-analyze", "log-level", "debug")


class Systemctl:
    """`systemctl` for the system manager, or `--user` as a user."""

    def __init__(self, ns: Namespace, user: str | None = None, uid: int | None = None) -> None:
        self.ns = ns
        self.user = user
        self.env = {"XDG_RUNTIME_DIR": f"/run/user/{uid}"} if uid is not None else None

    def __call__(self, *args: str, check: bool = True, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
        scope = ["--user"] if self.user else []
        return self.ns.run("systemctl", *scope, *args, user=self.user, env=self.env,
                           check=check, timeout=timeout)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    try:
        yield ns
    finally:
        ns.stop()


# -- installing pipelined as the docs say ------------------------------------------------


def build_wheel(dest: Path) -> Path:
    """The project's wheel, built from this checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(dest), str(REPO)], check=True, timeout=300,
                   capture_output=True)
    return next(dest.glob("pipelined-*.whl"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_venv(venv: Path, wheel: Path, owner: str | None = None) -> None:
    """`python3 -m venv` from the system Python and `pip install` the wheel (with its
    dependencies from the index, the first time), unless `venv` already holds this
    very wheel. A venv without our marker is someone's real install: skip."""
    run_as = ["runuser", "-u", owner, "--"] if owner else []
    subprocess.run([*run_as, "mkdir", "-p", str(venv.parent)], check=True, timeout=30)
    with (venv.parent / ".pipelined-test.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build it once
        marker = venv / MARKER
        if venv.exists() and not marker.exists():
            pytest.skip(f"{venv} exists and is not a test venv (a real install?); not touching it")
        digest = _digest(wheel)
        if marker.exists() and marker.read_text() == digest:
            return
        if owner:  # pytest's tmp folders are root's alone
            wheel = Path(shutil.copy(wheel, venv.parent))
            shutil.chown(wheel, owner)
        if not venv.exists():
            subprocess.run([*run_as, str(SYSTEM_PYTHON), "-m", "venv", str(venv)], check=True,
                           timeout=120, capture_output=True)
            marker.write_text("")
        if owner:
            shutil.chown(marker, owner)
        # Byte code compiled at install time: the system unit's /opt is read-only.
        done = subprocess.run([*run_as, str(venv / "bin" / "pip"), "install", "-q",
                               "--force-reinstall", "--no-deps", str(wheel)],
                              capture_output=True, text=True, timeout=600, check=False)
        deps = subprocess.run([*run_as, str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                              capture_output=True, text=True, timeout=600, check=False)
        if done.returncode or deps.returncode:
            pytest.fail(f"pip install into {venv} failed: {done.stderr} {deps.stderr}")
        marker.write_text(digest)


def ensure_system_user() -> None:
    """The system user and group the system unit runs as (the install doc's useradd)."""
    try:
        pwd.getpwnam("pipelined")
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/pipelined",
                        "--shell", "/usr/sbin/nologin", "pipelined"], check=True, timeout=60,
                       capture_output=True)


def ensure_test_user() -> pwd.struct_passwd:
    """A plain login user with a home under /home, for the user unit."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER],
                       check=True, timeout=60, capture_output=True)
        return pwd.getpwnam(TEST_USER)


class Site:
    """A system install's stories, config and database for one test, on the host."""

    def __init__(self) -> None:
        self.name = f"t{uuid.uuid4().hex[:10]}"
        self.dir = WORK / self.name
        self.root = self.dir / "stories"
        self.config = self.dir / "config.toml"
        self.db = Path("/var/lib/pipelined") / f"{self.name}.db"
        for stage in ("1_backlog", "2_current", "4_merge"):
            (self.root / stage).mkdir(parents=True)
        self.configure()

    def configure(self, **extra: str) -> None:
        lines = [f'root = "{self.root}"', f'db = "{self.db}"',
                 *(f'{k} = "{v}"' for k, v in extra.items())]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.config.chmod(0o644)

    def share(self) -> None:
        """Group pipelined, group-writable, setgid folders (the install doc's commands)."""
        subprocess.run(["chgrp", "-R", "pipelined", str(self.root)], check=True, timeout=60)
        subprocess.run(["chmod", "-R", "g+rwX", str(self.root)], check=True, timeout=60)
        for folder in [self.root, *self.root.iterdir()]:
            folder.chmod(folder.stat().st_mode | 0o2000)
        self.dir.chmod(0o755)

    def write(self, stage: str, story_id: str, name: str, body: str = "Body.\n") -> Path:
        path = self.root / stage / f"{story_id}.md"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(f"---\nname: {json.dumps(name)}\n---\n{body}", encoding="utf-8")
        shutil.chown(tmp, group="pipelined")
        tmp.chmod(0o664)
        tmp.rename(path)
        return path

    def drop_in(self) -> str:
        """The `systemctl edit pipelined` the install doc gives for stories elsewhere."""
        return ("[Service]\n"
                f"Environment=PIPELINED_CONFIG={self.config}\n"
                "ReadWritePaths=\n"
                f"ReadWritePaths={self.root}\n"
                f"WorkingDirectory={self.root}\n")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
