"""The terminal kanban: board columns (from `views.board_columns`) drawn with rich.

Imported only by `pipelined board`, so no other command pays for rich. rich
drops a few control characters but prints ESC, C1 and bidi characters as they
are: every text from a story goes through `terminal.one_line` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from pipelined.terminal import one_line

__all__ = ["render_board"]

# Below this many columns per stage, cards drop their borders to keep the text.
_MIN_BOXED_WIDTH = 18


def _card(card: dict[str, Any], boxed: bool) -> RenderableType:
    number = card["number"] if card["number"] is not None else card["id"]
    text = Text()
    text.append(one_line(f"#{number} "), style="bold cyan")
    text.append(one_line(str(card["name"] or card["id"])), style="bold")
    if card["agent"]:
        text.append("\n" + one_line(f"@{card['agent']}"), style="green")
    if card["blocked"]:
        text.append("\n[blocked]", style="bold red")
    if card["unmet"]:
        waits = ", ".join(f"#{d}" if isinstance(d, int) or str(d).isdigit() else str(d)
                          for d in card["unmet"])
        text.append("\n" + one_line(f"waits on {waits}"), style="yellow")
    if not boxed:
        return Group(text, Text(""))
    return Panel(text, border_style="red" if card["blocked"] else "dim", padding=(0, 1))


def render_board(columns: Sequence[dict[str, Any]], console: Console) -> None:
    """Print one column per stage, side by side, as wide as the console."""
    per_column = console.width // max(1, len(columns))
    boxed = per_column >= _MIN_BOXED_WIDTH
    table = Table(expand=True, box=None, padding=(0, 1), show_edge=False)
    for column in columns:
        table.add_column(Text(one_line(f"{column['stage']} ({column['count']})"), style="bold"),
                         ratio=1, overflow="fold", min_width=1)
    cells: list[RenderableType] = [
        Group(*(_card(card, boxed) for card in column["cards"])) if column["cards"]
        else Text("-", style="dim")
        for column in columns
    ]
    table.add_row(*cells)
    console.print(table)
