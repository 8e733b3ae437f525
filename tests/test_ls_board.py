"""`ls --ready/--sort/--limit` and `board`: views over the rows, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import DaemonProcess, Stories
from rich.console import Console

from pipelined.board import render_board
from pipelined.views import board_columns, is_ready, sort_stories, unmet_dependencies


def item(story_id: str, stage: str, blocked: bool | None = False,
         depends_on: list[Any] | None = None, name: str | None = None,
         updated_at: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {"id": story_id, "name": name or story_id, "stage": stage, "agent": None,
            "retry_count": 0, "blocked": blocked, "depends_on": depends_on,
            "created_at": updated_at, "updated_at": updated_at}


class TestReadiness:
    def test_dependencies_must_be_in_a_later_stage_or_gone(self) -> None:
        """A dependency in the same or an earlier stage is unmet; later or gone is met."""
        items = [item("1_a", "2_current"), item("2_b", "4_merge"),
                 item("3_c", "2_current", depends_on=[2, 99]),   # later + gone: ready
                 item("4_d", "2_current", depends_on=[1]),       # same stage: not ready
                 item("5_e", "10_done", depends_on=["1_a"]),     # earlier stage (by number)
                 item("6_f", "1_backlog", blocked=True),
                 item("7_g", "1_backlog", depends_on=["2_b", "1_a"])]
        unmet = unmet_dependencies(items)
        assert unmet == {"1_a": [], "2_b": [], "3_c": [], "4_d": [1], "5_e": ["1_a"],
                         "6_f": [], "7_g": []}
        assert [i["id"] for i in items if is_ready(i, unmet[i["id"]])] == [
            "1_a", "2_b", "3_c", "7_g"]

    def test_sort_keys(self) -> None:
        """stage sorts by folder number, id by story number, updated newest first."""
        items = [item("10_x", "10_done", name="b", updated_at="2026-01-03T00:00:00Z"),
                 item("9_y", "2_current", name="C", updated_at="2026-01-01T00:00:00Z"),
                 item("11_z", "2_current", name="a", updated_at="2026-01-02T00:00:00Z")]
        ids = lambda key: [i["id"] for i in sort_stories(items, key)]  # noqa: E731
        assert ids("stage") == ["9_y", "11_z", "10_x"]
        assert ids("id") == ["9_y", "10_x", "11_z"]
        assert ids("name") == ["11_z", "10_x", "9_y"]
        assert ids("updated") == ["10_x", "11_z", "9_y"]


@pytest.fixture
def populated(stories: Stories, daemon: DaemonProcess) -> DaemonProcess:
    stories.write("1_backlog", "1_story_a", name="Alpha", agent="coder-1", depends_on=[2])
    stories.write("1_backlog", "4_story_d", name="Delta", depends_on=[3])
    stories.write("2_current", "2_story_b", name="Beta", agent="coder-2", blocked=True)
    stories.write("2_current", "3_bug_c", name="Gamma", agent="coder-1", depends_on=[1, 77])
    stories.write("4_merge", "5_story_e", name="Epsilon")
    return daemon.start()


class TestLs:
    def test_ready_sort_limit(self, populated: DaemonProcess) -> None:
        """--ready keeps unblocked stories whose dependencies are further on; sort; limit."""
        ids = lambda *a: [i["id"] for i in json.loads(  # noqa: E731
            populated.cli("ls", "--json", *a, check=True).stdout)]
        assert ids("--ready") == ["1_story_a", "4_story_d", "5_story_e"]
        assert ids("--ready", "--stage", "1_backlog", "--agent", "coder-1") == ["1_story_a"]
        assert ids("--sort", "id") == ["1_story_a", "2_story_b", "3_bug_c", "4_story_d",
                                       "5_story_e"]
        assert ids("--sort", "name") == ["1_story_a", "2_story_b", "4_story_d", "5_story_e",
                                         "3_bug_c"]
        assert ids("--sort", "id", "--limit", "2") == ["1_story_a", "2_story_b"]
        assert len(ids("--sort", "updated")) == len(ids("--sort", "created")) == 5
        table = populated.cli("ls", "--ready", "--limit", "1", check=True).stdout
        assert table.splitlines()[1].startswith("1_story_a")
        bad = populated.cli("ls", "--limit", "0")
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1

    def test_json_list_one_story_per_line_in_stage_order(self, populated: DaemonProcess) -> None:
        """`ls --json` (default order: stage folders, then number) prints one story per
        line between the brackets; an empty result is `[]`."""
        out = populated.cli("ls", "--json", check=True).stdout
        lines = out.splitlines()
        assert lines[0] == "[" and lines[-1] == "]" and len(lines) == 5 + 2
        assert [json.loads(line.rstrip(","))["id"] for line in lines[1:-1]] == [
            "1_story_a", "4_story_d", "2_story_b", "3_bug_c", "5_story_e"]
        assert json.loads(out)[2]["blocked"] is True
        assert populated.cli("ls", "--json", "--agent", "nobody", check=True).stdout == "[]\n"


class TestBoard:
    def test_json_shape(self, populated: DaemonProcess) -> None:
        """board --json: one column per stage with cards and their unmet dependencies."""
        board = json.loads(populated.cli("board", "--json", check=True).stdout)
        assert [(c["stage"], c["count"]) for c in board["columns"]] == [
            ("1_backlog", 2), ("2_current", 2), ("4_merge", 1)]
        gamma = board["columns"][1]["cards"][1]
        assert gamma == {"id": "3_bug_c", "number": 3, "name": "Gamma", "agent": "coder-1",
                         "blocked": False, "depends_on": [1, 77], "unmet": [1]}
        assert board["columns"][1]["cards"][0]["blocked"] is True

    def test_text_output(self, populated: DaemonProcess) -> None:
        """Without --json the board prints every story's number and name."""
        text = populated.cli("board", check=True).stdout
        for label in ("1_backlog (2)", "#3", "Gamma", "Epsilon", "[blocked]", "waits on #1"):
            assert label in text, text

    @pytest.mark.parametrize("width", [80, 200])
    def test_fits_the_terminal(self, width: int) -> None:
        """Rendered at 80 and 200 columns, no line is wider and every card is there."""
        items = [item(f"{n}_story_{n}", stage, name=f"Story number {n}", blocked=n == 3,
                      depends_on=[n + 1] if n % 2 else None)
                 for n, stage in enumerate(["1_backlog"] * 4 + ["2_current"] * 3
                                           + ["4_merge"] * 2, start=1)]
        items[0]["agent"] = "coder-1"
        console = Console(record=True, width=width, color_system=None, force_terminal=False)
        render_board(board_columns(items, ["1_backlog", "2_current", "4_merge"]), console)
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        for n in range(1, 10):
            assert f"#{n} " in text
        assert "[blocked]" in text and "@coder-1" in text and "waits on #2" in text
        assert "1_backlog (4)" in text and "4_merge (2)" in text

    def test_many_stages_in_a_narrow_terminal(self) -> None:
        """Eight stages at 80 columns still fit: cards drop their borders."""
        stages = [f"{n}_stage{n}" for n in range(1, 9)]
        items = [item(f"{n}_s", stages[n - 1], name="A fairly long story name")
                 for n in range(1, 9)]
        console = Console(record=True, width=80, color_system=None)
        render_board(board_columns(items, stages), console)
        assert max(len(line) for line in console.export_text().splitlines()) <= 80


def test_read_commands_stay_light(populated: DaemonProcess) -> None:
    """ls and board --json import neither watchdog, pycrdt nor rich."""
    script = (
        "import sys\n"
        "from pipelined.cli import main\n"
        "for args in (['ls', '--ready'], ['board', '--json']):\n"
        "    try:\n"
        "        main([*args, '--root', sys.argv[1], '--db', sys.argv[2]])\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print(sorted(m for m in ('watchdog', 'pycrdt', 'rich') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(populated.root),
                             str(populated.db)], capture_output=True, text=True, timeout=60,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
