"""Every command holds its import budget: the heavy libraries it may load.

A command's fixed cost is mostly imports (interpreter start plus click is most of
a `show`), so laziness lives at one border, the CLI: each command's module is
imported only when that command runs, and imports only what the command needs.
Each command runs here in a fresh interpreter on a database built by the real
import code; the heavy top-level packages it loaded are compared with its budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEADLINE_S, Stories

from pipelined.config import resolve
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild

HEAVY = ("watchdog", "pycrdt", "rich", "yaml", "frontmatter", "structlog", "mcp",
         "starlette", "uvicorn")

# command (as typed after `pipelined`) -> the heavy packages it may import
BUDGETS: dict[tuple[str, ...], frozenset[str]] = {
    ("ls",): frozenset(),
    ("ls", "--ready", "--json"): frozenset(),
    ("show", "1"): frozenset(),
    ("board", "--json"): frozenset(),
    ("board",): frozenset({"rich"}),
    ("search", "login"): frozenset(),
    ("log",): frozenset(),
    ("events", "--since", "0"): frozenset(),
    ("stats",): frozenset(),
    ("status",): frozenset(),
    ("doctor",): frozenset({"pycrdt"}),  # it compares the pipeline state with the rows
    ("move", "1", "1_backlog"): frozenset(),
    # the parser checks the edited text reads back as intended
    ("set", "1", "agent=coder-1"): frozenset({"yaml", "frontmatter"}),
    ("claim", "2", "coder-2"): frozenset({"yaml", "frontmatter"}),
    ("--help",): frozenset(),
    ("--version",): frozenset(),
}

PROBE = """
import json, sys
from pipelined.cli import main
code = 0
try:
    main(sys.argv[2:], standalone_mode=True)
except SystemExit as exc:
    code = exc.code or 0
heavy = set(json.loads(sys.argv[1]))
loaded = sorted({m.split('.')[0] for m in sys.modules} & heavy)
print("\\nLOADED " + json.dumps(loaded), file=sys.stderr)
print("EXIT " + str(code), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("budget")
    stories = Stories(tmp / "root")
    stories.write("1_backlog", "1_story_login", name="login form")
    stories.write("2_current", "2_story_export", name="export", depends_on=[1])
    db = tmp / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()  # rebuild logged to this module's stderr
    return ["--root", str(stories.root), "--db", str(db)]


@pytest.mark.parametrize("command", list(BUDGETS), ids=" ".join)
def test_command_holds_its_import_budget(settings: list[str], command: tuple[str, ...]) -> None:
    """The command runs (exit 0) and loads no heavy package outside its budget."""
    args = list(command) if command[0].startswith("--") else [*command, *settings]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr
    assert "EXIT 0" in done.stderr.splitlines(), done.stderr
    loaded = set(json.loads(marker[-1][len("LOADED "):]))
    assert loaded <= BUDGETS[command], f"{' '.join(command)} imported {sorted(loaded)}"


def test_every_command_has_a_budget() -> None:
    """A new command gets a budget here (or is the daemon, tested by its own start)."""
    from pipelined.cli import COMMANDS

    budgeted = {command[0] for command in BUDGETS if not command[0].startswith("--")}
    # run/rebuild load the sync; edit runs the user's editor; mcp and serve run until
    # stopped
    # (the daemon must never load it: test_the_daemon_never_loads_the_network_stack);
    # publish runs until stopped too, and its tests start it (test_publish.py)
    exempt = {"run", "rebuild", "backup", "new", "init", "edit", "mcp", "serve", "publish"}
    assert set(COMMANDS) - exempt <= budgeted, sorted(set(COMMANDS) - exempt - budgeted)


def test_rebuild_needs_no_watcher(settings: list[str], tmp_path: Path) -> None:
    """`rebuild` imports the sync (pycrdt, the parser) but not watchdog."""
    root = settings[1]
    args = ["rebuild", "--root", root, "--db", str(tmp_path / "r.db")]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), *args],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    loaded = set(json.loads(next(line for line in done.stderr.splitlines()
                                 if line.startswith("LOADED "))[len("LOADED "):]))
    assert "watchdog" not in loaded


def test_the_daemon_never_loads_the_network_stack() -> None:
    """Every module the daemon runs, loaded in a fresh interpreter: no mcp, starlette,
    uvicorn or pydantic (the daemon stays network-free and its start fast; anyio comes
    with pycrdt)."""
    modules = ["pipelined.commands.run", "pipelined.daemon", "pipelined.apply",
               "pipelined.startup", "pipelined.sync", "pipelined.state", "pipelined.watch",
               "pipelined.store.writer", "pipelined.store.batch", "pipelined.logs"]
    probe = ("import importlib, json, sys\n"
             f"for name in {modules!r}: importlib.import_module(name)\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=DEADLINE_S, check=True)
    loaded = set(json.loads(done.stdout))
    assert "pycrdt" in loaded and "watchdog" in loaded  # the probe did load the daemon
    assert loaded & {"mcp", "mcp_types", "starlette", "uvicorn", "pydantic", "httpx",
                      "websockets"} == set()



def test_logging_loads_no_rich_and_leaves_it_importable() -> None:
    """structlog would import rich for tracebacks we do not use (5 MiB in the daemon):
    after the first log line rich is not loaded, and `import rich` still works."""
    probe = ("import sys\n"
             "from pipelined.logs import configure_logging, get_logger\n"
             "configure_logging('console', 'info')\n"
             "try:\n"
             "    1 / 0\n"
             "except ZeroDivisionError:\n"
             "    get_logger('probe').exception('probe.failed')\n"
             "print('RICH', 'rich' in sys.modules)\n"
             "import rich.console\n"
             "print('IMPORTED', 'rich' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=DEADLINE_S, check=True)
    assert done.stdout.split("\n")[:2] == ["RICH False", "IMPORTED True"], done.stdout
    assert "probe.failed" in done.stderr and "ZeroDivisionError" in done.stderr
