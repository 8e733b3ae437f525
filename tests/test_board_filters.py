"""The board's filters in `pipelined.service`, in-process on a database built by the
real import code (rebuild's): the server finds every matching card, not only the
first page's, and pages through them with the same cursors as without a filter."""

from __future__ import annotations

import pytest
from conftest import Stories

from pipelined.config import resolve
from pipelined.errors import FieldError
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.service import FILTER_BATCH, Pipeline

N = FILTER_BATCH * 2 + 50  # a text filter reads the stage in more than two batches


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    tmp = tmp_path_factory.mktemp("filters")
    stories = Stories(tmp / "root")
    for n in range(1, N + 1):
        name = "Ünïcode Needle" if n % 100 == 7 else f"story {n}"
        stories.write("1_backlog", f"{n}_story_s", name=name,
                      agent="late" if n > N - 3 else "coder")
    stories.write("2_current", "5000_story_x", name="needle elsewhere", depends_on=[1])
    config = resolve({"root": stories.root, "db": tmp / "p.db"}, env={})
    rebuild(config)
    configure_logging()  # rebuild logged to this module's stderr
    return Pipeline(config)


def test_a_filtered_board_counts_matches_and_keeps_totals(pipeline: Pipeline) -> None:
    board = pipeline.board(per_column=3, text="NEEDLE")
    backlog, current = board["columns"][0], board["columns"][1]
    needles = [n for n in range(1, N + 1) if n % 100 == 7]
    assert backlog["count"] == len(needles) and backlog["total"] == N
    assert [c["id"] for c in backlog["cards"]] == [f"{n}_story_s" for n in needles[:3]]
    assert backlog["more"] == len(needles) - 3 and backlog["next_cursor"]
    # Its dependency on story 1, which the filter leaves out, is still unmet (1 is in
    # an earlier stage); counted over the matches alone, 1 would look gone, so met.
    assert current["cards"][0]["unmet"] == [1] and current["total"] == 1
    assert board["agents"] == ["coder", "late"]


def test_counts_alone(pipeline: Pipeline) -> None:
    """per_column=0: the counts without cards (the page's counts under a filter)."""
    backlog = pipeline.board(per_column=0, agent="late")["columns"][0]
    assert (backlog["count"], backlog["cards"], backlog["next_cursor"]) == (3, [], None)


def test_cards_page_on_through_every_match(pipeline: Pipeline) -> None:
    """Page 3 at a time from the board's cursor: every needle, in order, once, across
    the batches the text filter reads."""
    board = pipeline.board(per_column=3, text="needle")
    seen = [c["id"] for c in board["columns"][0]["cards"]]
    cursor = board["columns"][0]["next_cursor"]
    while cursor:
        page = pipeline.cards("1_backlog", cursor, limit=3, text="needle")
        seen += [c["id"] for c in page["cards"]]
        cursor = page["next_cursor"]
    assert seen == [f"{n}_story_s" for n in range(1, N + 1) if n % 100 == 7]
    late = pipeline.cards("backlog", None, limit=2, agent="late")
    assert [c["id"] for c in late["cards"]] == [f"{N - 2}_story_s", f"{N - 1}_story_s"]
    assert pipeline.cards("1_backlog", None, text="no such words")["cards"] == []


def test_a_bad_cursor_under_a_filter_is_one_line(pipeline: Pipeline) -> None:
    with pytest.raises(FieldError, match="not a cursor this server gave"):
        pipeline.cards("1_backlog", "garbage!", text="needle")
