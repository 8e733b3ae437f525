"""The built wheel carries the migrations and runs outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import DaemonProcess, Stories

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it in a fresh venv, start the daemon on a new database."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("pipelined-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert sorted(n.rsplit("/", 1)[1] for n in names
                  if n.startswith("pipelined/migrations/") and n.endswith(".sql")) == shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    where = subprocess.run([str(python), "-c", "import pipelined; print(pipelined.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where

    stories = Stories(tmp_path / "root")
    stories.write("1_backlog", "1_story_wheel", name="From the wheel")
    daemon = DaemonProcess(stories.root, tmp_path / "new.db", tmp_path)
    daemon.python = str(python)  # type: ignore[attr-defined]
    try:
        daemon.start()
        assert daemon.row("1_story_wheel")["name"] == "From the wheel"  # type: ignore[index]
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    console = venv / "bin" / "pipelined"
    result = subprocess.run([str(console), "ls", "--root", str(stories.root), "--db",
                             str(tmp_path / "new.db")], capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    assert "From the wheel" in result.stdout
