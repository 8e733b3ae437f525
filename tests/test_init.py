"""`pipelined init`: stage folders, a commented config, the example stories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import DaemonProcess, Stories

from pipelined.config import resolve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(str(p.relative_to(ROOT / "stages-example"))
                  for p in (ROOT / "stages-example").glob("*/*.md"))


def init(*args: str, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelined", "init", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


class TestInit:
    def test_creates_stage_folders_and_config(self, tmp_path: Path) -> None:
        """Stage folders with .gitkeep, and pipelined.toml: the sample with `root = "."`,
        the file's own folder, so --config finds the root from anywhere."""
        root = tmp_path / "new" / "stories"
        result = init(str(root))
        assert result.returncode == 0, result.stderr
        for stage in ("1_backlog", "2_current", "4_merge"):
            assert (root / stage / ".gitkeep").is_file()
        config_file = root / "pipelined.toml"
        text = config_file.read_text()
        assert text.startswith("# pipelined configuration") and '\nroot = "."' in text
        config = resolve({}, env={}, config_file=config_file)
        assert config.root == root and config.stages == ("1_backlog", "2_current", "4_merge")
        assert f"pipelined run --config {config_file}" in result.stdout

    def test_json_shape_and_rerun_keeps_everything(self, tmp_path: Path) -> None:
        """--json lists what was created; a second run creates nothing and keeps all."""
        first = json.loads(init(str(tmp_path / "r"), "--stages", "1_todo,3_done",
                                "--json").stdout)
        assert first == {"root": str(tmp_path / "r"),
                         "config": str(tmp_path / "r" / "pipelined.toml"),
                         "created": ["1_todo/", "3_done/", "pipelined.toml"], "kept": []}
        (tmp_path / "r" / "pipelined.toml").write_text("# mine\n")
        second = json.loads(init(str(tmp_path / "r"), "--stages", "1_todo,3_done",
                                 "--json").stdout)
        assert second["created"] == []
        assert second["kept"] == ["1_todo/", "3_done/", "pipelined.toml"]
        assert (tmp_path / "r" / "pipelined.toml").read_text() == "# mine\n"

    def test_default_is_the_current_folder(self, tmp_path: Path) -> None:
        """Without DIR, init works in the current folder."""
        assert init(cwd=tmp_path).returncode == 0
        assert (tmp_path / "2_current").is_dir() and (tmp_path / "pipelined.toml").is_file()

    def test_bad_stage_name(self, tmp_path: Path) -> None:
        """A bad --stages value is one line naming it, and nothing is created."""
        result = init(str(tmp_path / "r"), "--stages", "backlog")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "Error: bad setting stages='backlog': a stage is named <digits>_<name>, "
            "at most 18 digits"]
        assert not (tmp_path / "r").exists()

    def test_example_and_a_daemon_on_it(self, tmp_path: Path) -> None:
        """--example copies stages-example/; the daemon started with the config syncs it."""
        root = tmp_path / "r"
        result = json.loads(init(str(root), "--example", "--json").stdout)
        copied = sorted(str(p.relative_to(root)) for p in root.glob("*/*.md"))
        assert copied == EXAMPLES and set(EXAMPLES) <= set(result["created"])
        daemon = DaemonProcess(root, tmp_path / "state.db", tmp_path)
        try:
            daemon.start("--config", str(root / "pipelined.toml"))
            assert len(daemon.rows()) == len(EXAMPLES)
            story = Stories(root)
            assert daemon.row("10_story_login")["content"] == (  # type: ignore[index]
                story.path("2_current", "10_story_login").read_text())
            assert daemon.stop() == 0
        finally:
            daemon.kill()
        again = json.loads(init(str(root), "--example", "--json").stdout)
        assert again["created"] == []


@pytest.mark.slow
def test_examples_ship_in_the_wheel(tmp_path: Path) -> None:
    """The wheel carries stages-example as pipelined/stages_example; init --example uses it."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("pipelined-*.whl"))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(unpacked)
    assert sorted(n.removeprefix("pipelined/stages_example/") for n in names
                  if n.startswith("pipelined/stages_example/")) == EXAMPLES
    env = {"PYTHONPATH": str(unpacked)}
    where = subprocess.run([sys.executable, "-c", "import pipelined; print(pipelined.__file__)"],
                           env={**os.environ, **env}, capture_output=True, text=True,
                           check=True, cwd=tmp_path).stdout
    assert where.startswith(str(unpacked)), where
    result = init(str(tmp_path / "r"), "--example", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(str(p.relative_to(tmp_path / "r"))
                  for p in (tmp_path / "r").glob("*/*.md")) == EXAMPLES
