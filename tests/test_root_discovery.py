"""Root discovery: with no root from a flag, the environment or a config file, the
root is the nearest folder from the current one upward that holds a pipelined.toml
or every stage folder, as git finds `.git`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STAGES, Stories

from pipelined.config import resolve
from pipelined.errors import RootError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No PIPELINED_* settings, and a user config folder of the test's own."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_from_a_stage_folder_or_deeper(stories: Stories, env: dict[str, str]) -> None:
    deep = stories.root / "2_current" / "notes" / "more"
    deep.mkdir(parents=True)
    for cwd in (stories.root, stories.root / "2_current", deep):
        assert resolve({}, env=env, cwd=cwd).root == stories.root


def test_a_pipelined_toml_marks_the_root_and_its_settings_apply(
        tmp_path: Path, env: dict[str, str]) -> None:
    """Its stages apply, and a relative db in it is the project's, not the cwd's."""
    root = tmp_path / "team"
    for stage in ("1_todo", "2_doing"):
        (root / stage).mkdir(parents=True)
    (root / "pipelined.toml").write_text(
        'stages = ["1_todo", "2_doing"]\ndb = "state/p.db"\nsettle_ms = 250\n')
    config = resolve({}, env=env, cwd=root / "2_doing")
    assert (config.root, config.stages) == (root, ("1_todo", "2_doing"))
    assert config.db_path == root / "state" / "p.db" and config.settle_ms == 250
    # Flags and the environment still win over it:
    assert resolve({"settle_ms": 80}, env={**env, "PIPELINED_DB": str(tmp_path / "e.db")},
                   cwd=root).settle_ms == 80


def test_an_explicit_config_file_is_the_only_file_read(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    root = tmp_path / "team"
    for stage in STAGES:
        (root / stage).mkdir(parents=True)
    (root / "pipelined.toml").write_text("settle_ms = 250\n")
    explicit = tmp_path / "other.toml"
    explicit.write_text("settle_ms = 120\n")
    config = resolve({}, env=env, config_file=explicit, cwd=root)
    assert (config.root, config.settle_ms) == (root, 120)


def test_a_root_from_any_layer_is_not_looked_for(stories: Stories, tmp_path: Path,
                                                 env: dict[str, str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert resolve({"root": elsewhere}, env=env, cwd=stories.root).root == elsewhere
    assert resolve({}, env={**env, "PIPELINED_ROOT": str(elsewhere)},
                   cwd=stories.root).root == elsewhere


def test_outside_any_root_one_line_says_so(tmp_path: Path, env: dict[str, str]) -> None:
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    with pytest.raises(RootError) as caught:
        resolve({}, env=env, cwd=nowhere)
    message = str(caught.value)
    assert message.startswith(f"{nowhere}: no stories here") and "\n" not in message
    assert "1_backlog/" in message and "pipelined init" in message
    # A read naming its database needs no root:
    assert resolve({"db": tmp_path / "x.db"}, env=env, cwd=nowhere).root == nowhere


def test_commands_run_from_a_stage_folder(stories: Stories, tmp_path: Path,
                                          env: dict[str, str]) -> None:
    """The real CLI, started in a stage folder with no --root: `rebuild` then `show`
    find the root above and the database named after it."""
    stories.write("2_current", "10_story_login", name="Login")
    cwd = stories.root / "2_current"
    run_env = {**env, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args in (["rebuild"], ["show", "10"]):
        done = subprocess.run([sys.executable, "-m", "pipelined", *args], cwd=cwd, env=run_env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
    assert "Login" in done.stdout
    outside = subprocess.run([sys.executable, "-m", "pipelined", "ls"], cwd=tmp_path,
                             env=run_env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert outside.returncode == 1 and outside.stderr.count("\n") == 1
    assert "no stories here" in outside.stderr


def test_a_copied_project_is_its_own_root(tmp_path: Path, env: dict[str, str]) -> None:
    """`init p1; cp -r p1 p2`: in p2 the root is p2, even if its pipelined.toml names
    another root (an older one written with an absolute path): the file marks its root."""
    done = subprocess.run([sys.executable, "-m", "pipelined", "init", str(tmp_path / "p1")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    shutil.copytree(tmp_path / "p1", tmp_path / "p2")
    assert resolve({}, env=env, cwd=tmp_path / "p2" / "1_backlog").root == tmp_path / "p2"
    (tmp_path / "p2" / "pipelined.toml").write_text(f'root = "{tmp_path / "p1"}"\n')
    assert resolve({}, env=env, cwd=tmp_path / "p2").root == tmp_path / "p2"


def test_a_root_given_reads_its_own_pipelined_toml(tmp_path: Path,
                                                   env: dict[str, str]) -> None:
    """`--root DIR` (or PIPELINED_ROOT) reads DIR/pipelined.toml as running in DIR does:
    the same stages and database either way."""
    root = tmp_path / "q2"
    for stage in ("1_todo", "2_doing"):
        (root / stage).mkdir(parents=True)
    (root / "pipelined.toml").write_text('stages = ["1_todo", "2_doing"]\ndb = "q.db"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inside = resolve({}, env=env, cwd=root)
    by_flag = resolve({"root": root}, env=env, cwd=elsewhere)
    by_env = resolve({}, env={**env, "PIPELINED_ROOT": str(root)}, cwd=elsewhere)
    for config in (inside, by_flag, by_env):
        assert (config.root, config.stages, config.db_path) == (
            root, ("1_todo", "2_doing"), root / "q.db")
