"""No character from a story file drives the reader's terminal (issue 11, item 3).

A story's file name (its id), name, agent, extra keys and body hold ESC `[2J`
(clear the screen), BEL, CSI as one C1 character (U+009B) and a right-to-left
override (U+202E). Every read command prints them escaped, in text and in
JSON; JSON still decodes to the original text. The database is built from the
folders by the real import code (`pipelined rebuild`'s), no daemon needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import Stories

from pipelined.cli import main
from pipelined.config import resolve
from pipelined.logs import configure_logging, get_logger
from pipelined.maintenance import rebuild
from pipelined.terminal import block, json_text, one_line

PAYLOAD = "\x1b[2J\x07\x9b\u202e"
SHOWN = "\\x1b[2J\\x07\\x9b\\u202e"  # how text output shows it
STORY = f"10_story{PAYLOAD}"
DEPENDENCY = f"12_dep{PAYLOAD}"
BROKEN = f"11_bad{PAYLOAD}"
# Never printed raw: C0 controls but newline and tab, DEL, C1, bidi overrides and isolates.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SGR = re.compile("\x1b\\[[0-9;]*m")  # colours a renderer adds itself


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """`--root` and `--db` of a database built from hostile stories."""
    tmp = tmp_path_factory.mktemp("hostile")
    stories = Stories(tmp / "root")
    # Written as JSON strings, valid YAML: raw ESC is not allowed in a YAML stream.
    stories.write("2_current", STORY, text="\n".join([
        "---", f"name: {json.dumps(f'Name{PAYLOAD}')}", f"agent: {json.dumps(f'agent{PAYLOAD}')}",
        f"depends_on: [{json.dumps(DEPENDENCY)}]",
        f"{json.dumps(f'key{PAYLOAD}')}: {json.dumps(f'value{PAYLOAD}')}",
        "---", f"Body login {PAYLOAD}", "\tindented line", ""]))
    stories.write("1_backlog", DEPENDENCY, name=f"Dependency{PAYLOAD}")
    stories.write("4_merge", "13_story_lines", name="two\nlines\tand a tab")
    stories.write("1_backlog", BROKEN, text=f"---\nname: [unclosed {PAYLOAD}\n---\nbody\n")
    stories.write("1_backlog", f"14_twin{PAYLOAD}", name="One twin")  # number 14 twice
    stories.write("4_merge", f"14_twin_b{PAYLOAD}", name="The other twin")
    db = tmp / "pipeline.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    yield ["--root", str(stories.root), "--db", str(db)]
    configure_logging()  # rebuild's log lines went to this module's stderr


def run(settings: list[str], *args: str, **env: str) -> Result:
    """A command in-process; the board as wide as a terminal that fits its cards."""
    result = CliRunner().invoke(main, [*args, *settings], env={"COLUMNS": "240", **env})
    assert result.exit_code in (0, 1), result.output  # doctor exits 1: a parse error
    return result


def strings(value: Any) -> Iterator[str]:
    """Every string in decoded JSON, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


TEXT_COMMANDS = [("ls",), ("show", "10"), ("board",), ("search", "login"), ("log",),
                 ("events", "--since", "0"), ("doctor",)]


class TestTextOutput:
    @pytest.mark.parametrize("args", TEXT_COMMANDS, ids=lambda a: a[0])
    def test_story_text_is_printed_escaped(self, hostile: list[str], args: tuple[str]) -> None:
        """Each read command prints the hostile id escaped, and no raw control character."""
        out = run(hostile, *args).stdout
        assert RAW.search(out) is None, repr(out)
        assert SHOWN in out

    def test_show_escapes_every_field_and_keeps_the_bodys_lines(self, hostile: list[str]) -> None:
        """`show`: name, agent, extra key and value, body escaped; body newlines and tab kept."""
        out = run(hostile, "show", "10").stdout
        assert RAW.search(out) is None, repr(out)
        for shown in (f"Name{SHOWN}", f"agent{SHOWN}", f"Body login {SHOWN}\n\tindented line"):
            assert shown in out
        assert "key\\u001b[2J\\u0007\\u009b\\u202e" in out  # the extra keys, as JSON

    def test_a_cell_stays_on_its_line(self, hostile: list[str]) -> None:
        """A newline or tab in a name is escaped in `ls`: one line per story, columns aligned."""
        lines = run(hostile, "ls").stdout.splitlines()
        assert len(lines) == 1 + 6  # the header and six stories
        row = next(line for line in lines if line.startswith("13_story_lines"))
        assert "two\\nlines\\tand a tab" in row
        stage_column = lines[0].index("STAGE")
        assert all(line[stage_column:].startswith(("1_", "2_", "4_")) for line in lines[1:])

    def test_board_on_a_colour_terminal(self, hostile: list[str]) -> None:
        """rich gets escaped text: with colours forced, only its own colour codes are raw."""
        out = run(hostile, "board", FORCE_COLOR="1").stdout
        assert SGR.search(out) is not None  # colours really were on
        assert RAW.search(SGR.sub("", out)) is None, repr(out)
        assert f"waits on {DEPENDENCY}".replace(PAYLOAD, SHOWN) in SGR.sub("", out)

    def test_an_error_line_is_escaped(self, hostile: list[str]) -> None:
        """The one `Error:` line escapes the file names it quotes (`move` of a number two
        files have)."""
        result = CliRunner().invoke(main, ["move", "14", "2_current", *hostile])
        assert result.exit_code == 1
        assert RAW.search(result.stderr) is None, repr(result.stderr)
        assert f"1_backlog/14_twin{SHOWN}.md" in result.stderr

    def test_move_names_the_story_escaped(self, hostile: list[str]) -> None:
        """`move` prints the id it found (here: already in that stage) escaped."""
        result = CliRunner().invoke(main, ["move", "12", "1_backlog", *hostile])
        assert result.exit_code == 0, result.output
        assert RAW.search(result.stdout) is None, repr(result.stdout)
        assert f"12_dep{SHOWN} is already in 1_backlog" in result.stdout


class TestJsonOutput:
    @pytest.mark.parametrize("args", TEXT_COMMANDS, ids=lambda a: a[0])
    def test_json_escapes_and_decodes_to_the_original(self, hostile: list[str],
                                                     args: tuple[str]) -> None:
        """--json has no raw control, C1 or bidi character; it decodes to the original id."""
        out = run(hostile, *args, "--json").stdout
        assert RAW.search(out) is None, repr(out)
        if args[0] == "events":  # JSON lines
            values: Any = [json.loads(line) for line in out.splitlines()]
        else:
            values = json.loads(out)
        found = set(strings(values))
        assert STORY in found or BROKEN in found or f"1_backlog/{BROKEN}.md" in found

    def test_show_json_keeps_every_value(self, hostile: list[str]) -> None:
        """`show --json`, escaped, decodes to the name, agent, extra key and value and body
        as written."""
        out = run(hostile, "show", "10", "--json").stdout
        assert RAW.search(out) is None, repr(out)
        story = json.loads(out)
        assert story["id"] == STORY
        assert story["name"] == f"Name{PAYLOAD}"
        assert story["agent"] == f"agent{PAYLOAD}"
        assert story["extra"] == {f"key{PAYLOAD}": f"value{PAYLOAD}"}
        assert f"Body login {PAYLOAD}\n\tindented line\n" in story["content"]


class TestEscapes:
    def test_one_line(self) -> None:
        """C0 (newline, tab, CR too), DEL, C1 and bidi characters become visible escapes."""
        assert one_line("a\x1b[2J\x07\n\t\r\x7f\x85\x9b\u202a\u2069z") == (
            "a\\x1b[2J\\x07\\n\\t\\r\\x7f\\x85\\x9b\\u202a\\u2069z")

    def test_block_keeps_line_ends_and_tabs(self) -> None:
        """A block keeps newlines, tabs and CR LF; a lone CR (it rewrites the line) is escaped."""
        assert block("a\r\n\tb\rc\x1b\n") == "a\r\n\tb\\rc\\x1b\n"

    def test_clean_text_is_returned_as_is(self) -> None:
        """Text with nothing to escape comes back unchanged, accents and emoji included."""
        text = "Café crème ✓ — 10_story"
        assert one_line(text) is text and block(text) is text and json_text(text) is text

    def test_json_text_decodes_to_the_same_value(self) -> None:
        """DEL, C1 and bidi characters left raw by ensure_ascii=False become \\u escapes."""
        value = {"k\x7f": ["\x9b\u202e\u2066 é", "\x1b"]}
        encoded = json_text(json.dumps(value, ensure_ascii=False))
        assert RAW.search(encoded) is None
        assert "\\u009b\\u202e\\u2066 é" in encoded
        assert json.loads(encoded) == value

    def test_printable_text_needs_no_pattern(self) -> None:
        """The early return on `str.isprintable()` is exact: of every code point, each
        one a pattern escapes is one isprintable() refuses (the block's tab and
        newline are blanked before it asks, CR is looked for by itself). Text that
        is not printable is searched, and comes back unchanged when nothing in it
        needs an escape."""
        from pipelined.terminal import _patterns, has_unsafe

        patterns = _patterns()
        for code in range(0x110000):
            char = chr(code)
            if patterns.line.search(char) or patterns.lines.search(char):
                assert not char.isprintable(), hex(code)
            if patterns.block.search(char) and char != "\r":
                assert not char.replace("\n", " ").replace("\t", " ").isprintable(), hex(code)
        joined = "a\u00adb \u200d\u00a0c"  # not printable, and nothing to escape
        assert not joined.isprintable()
        assert one_line(joined) is joined and block(joined) is joined
        assert not has_unsafe(joined) and not has_unsafe(joined + "\nx", newlines_ok=True)
        assert has_unsafe("a\tb", newlines_ok=True) and has_unsafe("a\nb")
        assert block("a\rb") == "a\\rb" and block("a\r\nb") == "a\r\nb"


@pytest.fixture
def log_output(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Configure a log format; returns what the daemon's logs wrote to stderr."""
    def use(fmt: str) -> Any:
        configure_logging(fmt, "debug")  # applied, with this test's stderr, on the next line
        return lambda: capsys.readouterr().err
    try:
        yield use
    finally:
        configure_logging()


class TestLogs:
    @pytest.mark.parametrize("fmt", ["console", "logfmt"])
    def test_story_values_are_escaped(self, log_output: Any, fmt: str) -> None:
        """console and logfmt escape story ids and other values; only colour codes are raw."""
        written = log_output(fmt)
        get_logger("test.terminal").info("story.created", id=STORY, stage="2_current",
                                         path=Path(STORY), fields=[f"name{PAYLOAD}"])
        out = SGR.sub("", written())
        assert RAW.search(out) is None, repr(out)
        assert "10_story\\x1b[2J" in out

    @pytest.mark.parametrize("fmt", ["console", "logfmt"])
    def test_a_traceback_is_escaped(self, log_output: Any, fmt: str) -> None:
        """An exception message with story text is escaped in the traceback too, logged
        by `.exception()` or with an explicit `exc_info=`."""
        written = log_output(fmt)
        log = get_logger("test.terminal")
        try:
            raise ValueError(f"cannot read {STORY}")
        except ValueError as exc:
            log.exception("sync.story_failed", id=STORY)
            log.error("apply.flush_failed", exc_info=exc)
        out = SGR.sub("", written())
        assert RAW.search(out) is None, repr(out)
        assert out.replace("\\\\", "\\").count("ValueError: cannot read 10_story\\x1b[2J") == 2
