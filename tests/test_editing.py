"""Field edits through the file (`pipelined.editing`, `set`, `claim`): real files, in-process,
and the claim race with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import STAGES, DaemonProcess, Stories, wait_until

from pipelined.editing import claim_story, parse_assignment, update_story
from pipelined.errors import (
    EditConflict,
    EditRefused,
    FieldError,
    PipelinedError,
    StoryClaimed,
    StoryNotFound,
)
from pipelined.story import parse_story

LIMIT = 1 << 20
STORY = """---
# who works on it
name: "Login page"  \N{SPACE}
agent: null
retry_count: 2
priority: high
tags: [auth, web]
---
# Login page

Some body text with: a colon
agent: not front matter
"""


def edit(stories: Stories, ref: str, **changes: Any) -> Any:
    return update_story(stories.root, STAGES, ref, changes, max_bytes=LIMIT)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def story(stories: Stories) -> Path:
    return stories.write("1_backlog", "12_story_login", STORY)


class TestOnlyThatLine:
    def test_a_changed_field_rewrites_its_line_and_nothing_else(
            self, stories: Stories, story: Path) -> None:
        """Byte for byte: the agent line differs, every other line (comment, trailing
        blanks, extra keys, body) is as it was."""
        edited = edit(stories, "12", agent="coder-1")
        after = story.read_bytes().split(b"\n")
        before = STORY.encode().split(b"\n")
        assert len(after) == len(before)
        assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [3]
        assert after[3] == b'agent: "coder-1"'
        assert edited.changed == ("agent",) and edited.story_id == "12_story_login"

    def test_a_missing_field_is_added_before_the_closing_line(
            self, stories: Stories, story: Path) -> None:
        edit(stories, "12_story_login", blocked=True, depends_on=[3, "4_story_x"])
        lines = story.read_text().split("\n")
        assert lines[7:10] == ["blocked: true", 'depends_on: [3, "4_story_x"]', "---"]
        assert [x for x in lines if x not in ("blocked: true", 'depends_on: [3, "4_story_x"]')
                ] == STORY.split("\n")

    def test_crlf_and_a_byte_order_mark_are_kept(self, stories: Stories) -> None:
        text = "\ufeff---\r\nname: x\r\nagent: a\r\n---\r\nbody\r\n"
        path = stories.write("2_current", "5_story_crlf", text)
        edit(stories, "5", agent="b", retry_count=1)
        assert path.read_bytes() == (
            "\ufeff---\r\nname: x\r\nagent: \"b\"\r\nretry_count: 1\r\n---\r\nbody\r\n"
        ).encode()

    def test_a_file_without_front_matter_gets_one_on_top(self, stories: Stories) -> None:
        path = stories.write("1_backlog", "6_story_plain", "just notes\n")
        edit(stories, "6", name="Plain")
        assert path.read_text() == '---\nname: "Plain"\n---\njust notes\n'

    @pytest.mark.parametrize("value", [
        'quote " and \\ backslash', "two\nlines", "tab\there", "line\u2028separator",
        "bell\x07", "accents: café", "emoji 🎉", "# not a comment", "null", "- dash", "[x]",
    ])
    def test_any_text_reads_back_as_written(self, stories: Stories, story: Path,
                                            value: str) -> None:
        """Hostile or odd text stays on its line and reads back exactly."""
        edit(stories, "12", name=value)
        parsed = parse_story(story.read_bytes(), LIMIT)
        assert parsed.fields["name"] == value and parsed.errors == ()
        assert len(story.read_text().split("\n")) == len(STORY.split("\n"))

    def test_the_file_mode_is_kept_and_no_temporary_file_is_left(
            self, stories: Stories, story: Path) -> None:
        story.chmod(0o640)
        edit(stories, "12", agent="a")
        assert story.stat().st_mode & 0o777 == 0o640
        assert files_in(story.parent) == ["12_story_login.md"]

    def test_an_equal_value_writes_nothing(self, stories: Stories, story: Path) -> None:
        inode = story.stat().st_ino
        assert edit(stories, "12", retry_count=2).changed == ()
        assert story.stat().st_ino == inode

    def test_a_symlinked_story_is_edited_at_its_target(self, stories: Stories) -> None:
        target = stories.root / "notes" / "7.md"
        target.parent.mkdir()
        target.write_text("---\nname: linked\n---\n")
        link = stories.path("1_backlog", "7_story_linked")
        link.symlink_to(target)
        edit(stories, "7", agent="a")
        assert link.is_symlink() and 'agent: "a"' in target.read_text()


class TestRefused:
    @pytest.mark.parametrize(("text", "why"), [
        ("---\nname: x\ndepends_on:\n  - 12\n---\n", "spans several lines"),
        ("---\nname: |\n  long\n---\n", "spans several lines"),
        ("---\nagent: a\nagent: b\n---\n", "written 2 times"),
        ("---\nname: [unclosed\n---\n", "does not parse"),
        ("---\nname: x\n", "does not parse"),
    ])
    def test_what_cannot_be_edited_line_by_line(self, stories: Stories, text: str,
                                                why: str) -> None:
        """One line naming the problem; the file is untouched and nothing is left beside it."""
        path = stories.write("1_backlog", "8_story_odd", text)
        with pytest.raises(EditRefused, match=why) as raised:
            edit(stories, "8", name="n", agent="z", depends_on=[1])
        assert "\n" not in str(raised.value) and "nothing was written" in str(raised.value)
        assert path.read_text() == text
        assert files_in(path.parent) == ["8_story_odd.md"]

    @pytest.mark.parametrize(("changes", "why"), [
        ({"bogus": 1}, "no such field"),
        ({"retry_count": -1}, "expected an integer"),
        ({"blocked": "yes"}, "expected true or false"),
        ({"depends_on": [True]}, "expected a list of story numbers or ids"),
        ({"name": "x" * 10_000}, "10000 characters; at most 500"),
        ({"agent": "\ud800"}, "lone surrogate"),
    ])
    def test_bad_values(self, stories: Stories, story: Path, changes: dict[str, Any],
                        why: str) -> None:
        with pytest.raises(FieldError, match=why) as raised:
            update_story(stories.root, STAGES, "12", changes, max_bytes=LIMIT)
        assert len(str(raised.value)) < 200
        assert story.read_text() == STORY

    def test_unknown_and_ambiguous_stories(self, stories: Stories, story: Path) -> None:
        with pytest.raises(StoryNotFound):
            edit(stories, "99", agent="a")
        stories.write("2_current", "12_bug_crash", "---\nname: crash\n---\n")
        with pytest.raises(PipelinedError, match="more than one story"):
            edit(stories, "12", agent="a")
        copy = stories.write("4_merge", "12_story_login", STORY)  # one id in two stages
        with pytest.raises(PipelinedError, match="the same id in two stages is a conflict"):
            edit(stories, "12_story_login", agent="a")
        assert story.read_text() == copy.read_text() == STORY

    @pytest.mark.parametrize(("text", "parsed"), [
        ("agent=", ("agent", None)), ("retry_count=3", ("retry_count", 3)),
        ("blocked=yes", ("blocked", True)),
        ("depends_on=1, 2_story_b", ("depends_on", [1, "2_story_b"])),
        ("name=a=b", ("name", "a=b")),
    ])
    def test_command_line_assignments(self, text: str, parsed: tuple[str, Any]) -> None:
        assert parse_assignment(text) == parsed

    @pytest.mark.parametrize("text", ["agent", "retry_count=x", "blocked=maybe",
                                      "depends_on=../x", "nope=1"])
    def test_bad_command_line_assignments(self, text: str) -> None:
        with pytest.raises(FieldError):
            parse_assignment(text)


class TestCompareAndSwap:
    def test_a_change_between_read_and_write_writes_nothing(
            self, stories: Stories, story: Path) -> None:
        """An editor saves in place after the edit read the file: the edit is refused
        and the editor's text stays."""
        theirs = STORY.replace("retry_count: 2", "retry_count: 5")

        def meanwhile(_story_id: str, _fields: dict[str, Any]) -> None:
            story.write_text(theirs)  # in place, as vim with backupcopy=yes saves

        with pytest.raises(EditConflict, match="changed since it was read"):
            update_story(stories.root, STAGES, "12", {"agent": "a"}, max_bytes=LIMIT,
                         require=meanwhile)
        assert story.read_text() == theirs
        assert files_in(story.parent) == ["12_story_login.md"]


class TestClaim:
    def test_claim_an_unassigned_story_then_again_then_by_another(
            self, stories: Stories, story: Path) -> None:
        assert claim_story(stories.root, STAGES, "12", "coder-1", max_bytes=LIMIT).changed == (
            "agent",)
        assert claim_story(stories.root, STAGES, "12", "coder-1", max_bytes=LIMIT).changed == ()
        with pytest.raises(StoryClaimed, match="claimed by 'coder-1'"):
            claim_story(stories.root, STAGES, "12", "coder-2", max_bytes=LIMIT)

    def test_eight_processes_claim_at_once_and_exactly_one_wins(
            self, stories: Stories, story: Path, tmp_path: Path) -> None:
        """Eight `pipelined claim` processes released together on one story: one exits 0,
        the seven others say who holds it; the file names the winner."""
        go = tmp_path / "go"
        script = ("import os, sys, time\n"
                  "from pipelined.cli import main\n"
                  "open(sys.argv[1] + '.' + sys.argv[4], 'w').close()\n"
                  "deadline = time.monotonic() + 60\n"
                  "while not os.path.exists(sys.argv[1]):  # the start line, polled\n"
                  "    assert time.monotonic() < deadline, 'never released'\n"
                  "    time.sleep(0.001)\n"
                  "sys.argv = ['pipelined', *sys.argv[2:]]\n"
                  "main()\n")
        procs = [subprocess.Popen(
            [sys.executable, "-c", script, str(go), "claim", "12", f"agent-{n}",
             "--root", str(stories.root), "--db", str(tmp_path / "p.db"), "--no-wait"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(8)]
        wait_until(lambda: all(Path(f"{go}.agent-{n}").exists() for n in range(8)),
                   what="eight claimers at the start line")
        go.write_text("")
        results = [(p.wait(60), *p.communicate()) for p in procs]
        winners = [out for code, out, _err in results if code == 0]
        losers = [err for code, _out, err in results if code != 0]
        assert len(winners) == 1 and len(losers) == 7, results
        agent = parse_story(story.read_bytes(), LIMIT).fields["agent"]
        assert winners[0].startswith("12_story_login: agent (none) -> " + agent)
        assert all(err == f"Error: 12_story_login is claimed by {agent!r}\n" for err in losers)
        assert files_in(story.parent) == ["12_story_login.md"]


class TestCommandsWithADaemon:
    def test_set_waits_until_the_daemon_shows_the_edit(
            self, stories: Stories, story: Path, daemon: DaemonProcess) -> None:
        daemon.start()
        daemon.wait_row("12_story_login")
        result = daemon.cli("set", "12", "agent=coder-9", "blocked=true", "--json", check=True)
        shown = json.loads(result.stdout)
        assert shown["synced"] is True and shown["changed"] == ["agent", "blocked"]
        row = daemon.row("12_story_login")
        assert row is not None and (row["agent"], row["blocked"]) == ("coder-9", 1)

    def test_edit_runs_the_editor_on_the_file(self, stories: Stories, story: Path,
                                              tmp_path: Path) -> None:
        """$EDITOR gets the story's path; a failing editor is one error line."""
        env = {**os.environ, "EDITOR": "sed -i s/Login/Logout/"}
        done = subprocess.run([sys.executable, "-m", "pipelined", "edit", "12",
                               "--root", str(stories.root), "--db", str(tmp_path / "p.db")],
                              env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert 'name: "Logout page"' in story.read_text()
        env["EDITOR"] = "false"
        failed = subprocess.run([sys.executable, "-m", "pipelined", "edit", "12",
                                 "--root", str(stories.root), "--db", str(tmp_path / "p.db")],
                                env=env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert failed.returncode == 1
        assert failed.stderr.startswith("Error: ") and "exited with status 1" in failed.stderr


class TestReviewedEdges:
    def test_a_blank_agent_can_be_claimed(self, stories: Stories) -> None:
        stories.write("1_backlog", "5_story_blank", '---\nname: x\nagent: ""\n---\n')
        assert claim_story(stories.root, STAGES, "5", "coder-1", max_bytes=LIMIT).changed == (
            "agent",)

    def test_a_symlink_to_a_file_that_is_no_story_is_not_edited(self, stories: Stories) -> None:
        """A committed symlink pointing at `.git/config` (or any non-.md file, or out of
        the root) must not let a claim write into it."""
        git = stories.root / ".git"
        git.mkdir()
        config = git / "config"
        config.write_text("[core]\n")
        stories.path("1_backlog", "5_story_trap").symlink_to(config)
        outside = stories.root.parent / "outside.md"
        outside.write_text("---\nname: out\n---\n")
        stories.path("1_backlog", "6_story_out").symlink_to(outside)
        md_in_git = git / "notes.md"
        md_in_git.write_text("---\nname: hidden\n---\n")
        stories.path("1_backlog", "7_story_git").symlink_to(md_in_git)
        for ref in ("5", "6", "7"):
            with pytest.raises(EditRefused):
                claim_story(stories.root, STAGES, ref, "coder-1", max_bytes=LIMIT)
        assert config.read_text() == "[core]\n" and "coder" not in outside.read_text()
        assert "coder" not in md_in_git.read_text()

    def test_clearing_a_field_that_holds_a_bad_value_clears_it(self, stories: Stories) -> None:
        path = stories.write("1_backlog", "5_story_bad", "---\nname: x\nretry_count: abc\n---\n")
        edited = edit(stories, "5", retry_count=None)
        assert edited.changed == ("retry_count",)
        assert parse_story(path.read_bytes(), LIMIT).errors == ()

    def test_dependency_ids_with_any_characters_are_written_readably(
            self, stories: Stories, story: Path) -> None:
        edit(stories, "12", depends_on=[3, "4_story_café", "5_story_🚀"])
        assert 'depends_on: [3, "4_story_café", "5_story_🚀"]' in story.read_text()
        parsed = parse_story(story.read_bytes(), LIMIT)
        assert json.loads(parsed.fields["depends_on"]) == [3, "4_story_café", "5_story_🚀"]

    def test_each_line_keeps_its_own_ending(self, stories: Stories) -> None:
        path = stories.write("1_backlog", "5_story_mixed", "---\nname: x\r\nagent: z\n---\n")
        edit(stories, "5", name="y", agent="w")
        assert path.read_bytes() == b'---\nname: "y"\r\nagent: "w"\n---\n'
