"""The quick path (`commands.quick`): `ls`, `show` and `status` on a simple command line
run without click, and print exactly what the click commands print.

Each form runs both ways in this process, on a database built by the real import
code: through `pipelined.entry.main` (the quick path) and through the click
group with the same arguments. stdout, stderr and the exit status must be equal,
for output, errors and the note about old data alike. Then, in a fresh
interpreter, the quick forms must not import click, and the others must.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEADLINE_S, Stories

from pipelined.cli import main as command_group
from pipelined.commands.quick import parse
from pipelined.config import resolve
from pipelined.entry import main as entry_main
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("quick")
    stories = Stories(tmp / "root")
    stories.write("1_backlog", "1_story_login", name="login form", agent="coder-1")
    stories.write("2_current", "2_story_export", name="export", depends_on=[1])
    stories.write("2_current", "4_story_escape", name="clear \x1b[2J")
    stories.write("2_current", "3_story_broken", text="---\nname: [unclosed\n---\nbody\n")
    stories.write("4_merge", "2_story_export", name="export, the other copy")
    db = tmp / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()  # rebuild logged to this module's stderr
    return ["--root", str(stories.root), "--db", str(db)]


def run_both(args: list[str], capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[str, str, object], ...]:
    """(stdout, stderr, exit status) through the entry point, then through click."""
    results = []
    for runner in ("entry", "click"):
        monkeypatch.setattr(sys, "argv", ["pipelined", *args])
        code: object = 0
        try:
            if runner == "entry":
                entry_main()
            else:
                command_group(args, standalone_mode=True)
        except SystemExit as exc:
            code = exc.code or 0
        out, err = capsys.readouterr()
        results.append((out, err, code))
    return tuple(results)


QUICK_FORMS = [
    ["ls"],
    ["ls", "--json"],
    ["ls", "--stage", "current"],
    ["ls", "--stage=2_current", "--json"],
    ["show", "1"],
    ["show", "--json", "2_story_export"],
    ["show", "3"],
    ["status"],
    ["status", "--json"],
    # errors: the same line and exit status
    ["show", "99"],
    ["ls", "--stage", "9_nope"],
]


@pytest.mark.parametrize("form", QUICK_FORMS, ids=" ".join)
def test_the_quick_path_prints_what_click_prints(
        settings: list[str], form: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse([*form, *settings]) is not None  # the form is a quick one
    quick, clicked = run_both([*form, *settings], capsys, monkeypatch)
    assert quick == clicked
    out, err, code = quick
    if form[-1] in ("99", "9_nope"):
        assert code == 1 and err.startswith("Error: ") and err.count("\n") == 1, err
    else:
        assert code == 0 and out, err
        # no daemon keeps this database: the note follows the output (not for status,
        # which says it in its own words)
        assert err.startswith("note: ") == (form[0] != "status"), err


@pytest.mark.parametrize("spelling", [("./root", "./p.db"), ("root/", ".//p.db"),
                                      ("./root/../root", "root/.././p.db")],
                         ids=["dot", "slashes", "dot-dot"])
@pytest.mark.parametrize("form", [["show", "2"], ["status"], ["status", "--json"]],
                         ids=" ".join)
def test_relative_paths_print_the_same(settings: list[str], form: list[str],
                                       spelling: tuple[str, str],
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths as typed, relative, with `.`, `//` and `..`: the quick path (strings)
    prints them as the click commands (pathlib) do."""
    monkeypatch.chdir(Path(settings[3]).parent)
    root, db = spelling
    quick, clicked = run_both([*form, "--root", root, "--db", db], capsys, monkeypatch)
    assert quick == clicked
    assert quick[2] == 0, quick[1]


def test_the_quick_path_escapes_story_text(settings: list[str],
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (out, _, code), _ = run_both(["show", "4", *settings], capsys, monkeypatch)
    assert code == 0 and "\x1b" not in out and "\\x1b[2J" in out


@pytest.mark.parametrize("args", [
    [], ["--help"], ["ls", "--help"], ["ls", "--agent", "x"], ["ls", "--stage"],
    ["ls", "--stage", ""], ["ls", "--stage", "a", "--stage", "b"], ["ls", "extra"],
    ["show"], ["show", "1", "2"], ["show", "-1"], ["show", "1", "--"],
    ["status", "--json", "--json"], ["status", "--verbose"], ["board"], ["-V"],
    ["show", "1", "--root"], ["ls", "--root", "--json"],
    ["run", "--json"], ["run", "--settle-ms", "+100"], ["run", "--settle-ms", "1e3"],
    ["run", "--log-format", "JSON"], ["run", "--log-level=verbose"], ["run", "x"],
])
def test_anything_else_goes_to_click(args: list[str]) -> None:
    assert parse(args) is None


def test_run_takes_its_own_options() -> None:
    assert parse(["run", "--settle-ms", "50", "--log-format=json", "--log-level", "debug",
                  "--max-file-bytes", "4096", "--root", "r"]) == (
        "run", {"--settle-ms": "50", "--log-format": "json", "--log-level": "debug",
                "--max-file-bytes": "4096", "--root": "r"}, None, False)


CLICK_PROBE = """
import sys
from pipelined.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("args", "status"), [
    (["run", "--root", "{tmp}/nowhere"], 1),  # a root a later mount may bring: restart
    (["run", "--db", "{tmp}/damaged.db", "--root", "{root}"], 78),  # no restart cures it
    (["run", "--settle-ms", "0", "--root", "{root}"], 78),  # a bad setting
])
def test_run_fails_the_same_both_ways(args: list[str], status: int, settings: list[str],
                                      tmp_path: Path) -> None:
    """`run` failing before the daemon starts, in a fresh interpreter: the same line and
    exit status through the quick path and through click (78 where systemd must not
    restart it)."""
    (tmp_path / "damaged.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    filled = [a.format(tmp=tmp_path, root=settings[1]) for a in args]
    assert parse(filled) is not None
    results = []
    for probe in (PROBE, CLICK_PROBE):
        done = subprocess.run([sys.executable, "-c", probe, *filled], capture_output=True,
                              text=True, timeout=DEADLINE_S, check=False, cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        results.append((done.stdout, errors, done.returncode if probe is CLICK_PROBE
                        else int(done.stderr.split(" EXIT ")[-1])))
    assert results[0] == results[1]
    out, errors, code = results[0]
    assert code == status and out == "" and len(errors) == 1, results


def test_settings_options_in_both_spellings() -> None:
    assert parse(["show", "--root=r", "7", "--db", "d.db", "--json"]) == (
        "show", {"--root": "r", "--db": "d.db"}, "7", True)
    assert parse(["ls", "--stages", "1_a,2_b", "--config=c.toml", "--stage", "a"]) == (
        "ls", {"--stages": "1_a,2_b", "--config": "c.toml", "--stage": "a"}, None, False)


PROBE = """
import sys
from pipelined.entry import main
sys.argv = ["pipelined", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("CLICK " + str("click" in sys.modules) + " EXIT " + str(code), file=sys.stderr)
"""


@pytest.mark.parametrize(("form", "quick"), [
    (["show", "1"], True), (["ls", "--stage", "current"], True), (["status", "--json"], True),
    (["ls", "--agent", "coder-1"], False), (["show", "1", "-h"], False),
    (["run", "--settle-ms", "0"], True),  # fails its check (exit 78) before it starts
])
def test_the_quick_forms_do_not_import_click(settings: list[str], form: list[str],
                                             quick: bool, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, *form, *settings],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False,
                          cwd=tmp_path)
    status = 78 if form[0] == "run" else 0
    assert f"CLICK {not quick} EXIT {status}" in done.stderr.splitlines(), done.stderr


def test_completion_is_left_to_click(settings: list[str], tmp_path: Path) -> None:
    """With click's completion variable set, even `show 1` goes to click (which completes)."""
    env = {"_PIPELINED_COMPLETE": "bash_complete", "COMP_WORDS": "pipelined show 1_",
           "COMP_CWORD": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", PROBE, "show", "1", *settings],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False,
                          cwd=tmp_path, env=env)
    assert "CLICK True EXIT 0" in done.stderr.splitlines(), done.stderr


def test_json_forms_are_json(settings: list[str], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    (out, _, _), _ = run_both(["ls", "--json", *settings], capsys, monkeypatch)
    # stage, then number; the conflict's newer copy (4_merge) wins
    assert [(item["id"], item["stage"]) for item in json.loads(out)] == [
        ("1_story_login", "1_backlog"), ("3_story_broken", "2_current"),
        ("4_story_escape", "2_current"), ("2_story_export", "4_merge")]
