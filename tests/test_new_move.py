"""`pipelined new` and `pipelined move`: files written through the folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STAGES, DaemonProcess, Stories, wait_until

from pipelined.authoring import slugify
from pipelined.story import parse_story


def pipelined(stories: Stories, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelined", *args, "--root", str(stories.root), "--db", str(db)],
        capture_output=True, text=True, timeout=60, check=False)


def story_files(stories: Stories) -> list[Path]:
    return sorted(p for stage in STAGES for p in (stories.root / stage).iterdir())


class TestSlugify:
    @pytest.mark.parametrize(("title", "slug"), [
        ("Export as CSV", "export_as_csv"),
        ("Fix: the login (again)!", "fix_the_login_again"),
        ("Crème brûlée", "creme_brulee"),
        ("../x", "x"),
        ("a/b", "a_b"),
        ("../../etc/passwd", "etc_passwd"),
        ("日本語", "untitled"),
        ("!!!", "untitled"),
    ])
    def test_slugs(self, title: str, slug: str) -> None:
        """Titles become lowercase ASCII words joined by `_`; nothing left is `untitled`."""
        assert slugify(title) == slug

    def test_long_titles_are_cut_at_a_word(self) -> None:
        """A long title's slug stays short and does not end in a cut word or `_`."""
        slug = slugify("word " * 40)
        assert len(slug) <= 50 and slug.endswith("word") and not slug.endswith("_")


class TestNew:
    def test_writes_front_matter_and_prints_the_id(self, stories: Stories,
                                                  tmp_path: Path) -> None:
        """The file is `<n>_<type>_<slug>.md` in the first stage; its front matter parses."""
        stories.write("2_current", "7_story_old")
        result = pipelined(stories, tmp_path / "none.db", "new", "Export as CSV", "--agent",
                           "coder-1", "--depends", "3,5_story_x", "--type", "bug")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "8_bug_export_as_csv\n"
        raw = stories.path("1_backlog", "8_bug_export_as_csv").read_bytes()
        parsed = parse_story(raw, 1 << 20)
        assert parsed.errors == ()
        assert parsed.fields == {"name": "Export as CSV", "agent": "coder-1", "retry_count": 0,
                                 "blocked": False, "depends_on": '[3, "5_story_x"]'}

    def test_json_shape_and_options(self, stories: Stories, tmp_path: Path) -> None:
        """--json gives id, absolute path, number and stage; --stage and --blocked apply."""
        result = pipelined(stories, tmp_path / "none.db", "new", "Spike it", "--type", "spike",
                           "--stage", "2_current", "--blocked", "--json")
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        path = stories.path("2_current", "1_spike_spike_it")
        assert out == {"id": "1_spike_spike_it", "path": str(path), "number": 1,
                       "stage": "2_current"}
        parsed = parse_story(path.read_bytes(), 1 << 20)
        assert parsed.fields["blocked"] is True and parsed.fields["agent"] is None

    def test_hostile_titles(self, stories: Stories, tmp_path: Path) -> None:
        """Path-like, empty-slug and quoted titles stay in the stage folder, name intact."""
        db = tmp_path / "none.db"
        for title in ("../x", "a/b", "日本語", 'say "hi": #1\nnext'):
            result = pipelined(stories, db, "new", title, "--json")
            assert result.returncode == 0, result.stderr
            out = json.loads(result.stdout)
            assert Path(out["path"]).parent == stories.root / "1_backlog"
            parsed = parse_story(Path(out["path"]).read_bytes(), 1 << 20)
            assert parsed.fields["name"] == title
        assert [p.name for p in story_files(stories)] == [
            "1_story_x.md", "2_story_a_b.md", "3_story_untitled.md", "4_story_say_hi_1_next.md"]
        assert not (stories.root.parent / "x.md").exists()

    def test_user_errors_are_one_line(self, stories: Stories, tmp_path: Path) -> None:
        """Unknown stage, blank title, bad --depends: one `Error:` line, non-zero exit."""
        db = tmp_path / "none.db"
        for args, message in (
            (("new", "x", "--stage", "9_nope"), "Error: unknown stage '9_nope'"),
            (("new", "   "), "Error: bad value '   ': a story needs a title"),
            (("new", "x", "--depends", "soon"),
             "Error: depends_on='soon': not a story number or id"),
        ):
            result = pipelined(stories, db, *args)
            assert result.returncode != 0
            assert len(result.stderr.strip().splitlines()) == 1
            assert result.stderr.startswith(message), result.stderr
        assert story_files(stories) == []

    def test_numbers_come_after_the_database_high_water_mark(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """A deleted story's number is never handed out again (database high-water mark)."""
        stories.write("1_backlog", "40_story_gone")
        daemon.start()
        daemon.wait_row("40_story_gone")
        stories.path("1_backlog", "40_story_gone").unlink()
        daemon.wait_gone("40_story_gone")
        assert daemon.stop() == 0
        result = daemon.cli("new", "After the gone one", check=True)
        assert result.stdout.strip() == "41_story_after_the_gone_one"

    def test_the_daemon_picks_it_up(self, stories: Stories, daemon: DaemonProcess) -> None:
        """With the daemon running, the new story shows up as a row with its fields."""
        daemon.start()
        out = json.loads(daemon.cli("new", "Live one", "--agent", "a1", "--depends", "2",
                                    "--json", check=True).stdout)
        row = daemon.wait_row(out["id"])
        assert row == {**row, "name": "Live one", "stage": "1_backlog", "agent": "a1",
                       "retry_count": 0, "blocked": 0, "depends_on": "[2]"}
        assert row["content"] == Path(out["path"]).read_text()
        events = [e for e in daemon.log_events() if e.get("event") == "story.created"]
        assert [e["id"] for e in events] == [out["id"]]  # no temp file seen as a story

    def test_concurrent_new_never_share_a_number(self, stories: Stories,
                                                 tmp_path: Path) -> None:
        """8 processes creating 5 stories each at once get 40 distinct numbers."""
        script = (
            "import sys\n"
            "from click.testing import CliRunner\n"
            "from pipelined.cli import main\n"
            "root, db, worker = sys.argv[1:]\n"
            "for i in range(5):\n"
            "    r = CliRunner().invoke(main, ['new', f'w{worker} s{i}', '--root', root,\n"
            "                                  '--db', db])\n"
            "    assert r.exit_code == 0, r.output\n"
            "    print(r.output.strip())\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", script, str(stories.root),
                                   str(tmp_path / "none.db"), str(w)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for w in range(8)]
        ids = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            ids += out.split()
        numbers = sorted(int(i.split("_")[0]) for i in ids)
        assert numbers == list(range(1, 41))
        files = story_files(stories)
        assert sorted(p.stem for p in files) == sorted(ids)
        assert all(parse_story(p.read_bytes(), 1 << 20).errors == () for p in files)
        leftovers = [n for n in os.listdir(stories.root) if n.startswith(".")]
        assert leftovers == []  # claims and temp files are all gone


class TestMove:
    @pytest.fixture
    def running(self, stories: Stories, daemon: DaemonProcess) -> DaemonProcess:
        stories.write("1_backlog", "12_story_login", name="Login", retry_count=3)
        stories.write("2_current", "13_bug_crash", name="Crash")
        return daemon.start()

    def test_move_waits_until_the_database_shows_it(self, running: DaemonProcess,
                                                    stories: Stories) -> None:
        """`move 12 2_current` renames the file and returns once the row has the new stage."""
        result = running.cli("move", "12", "2_current", "--json", check=True)
        assert json.loads(result.stdout) == {
            "id": "12_story_login", "from_stage": "1_backlog", "to_stage": "2_current",
            "path": str(stories.path("2_current", "12_story_login")), "synced": True}
        row = running.row("12_story_login")  # no polling: move already waited
        assert row is not None and row["stage"] == "2_current" and row["retry_count"] == 0
        assert not stories.path("1_backlog", "12_story_login").exists()

    def test_no_wait_and_plain_output(self, running: DaemonProcess, stories: Stories) -> None:
        """--no-wait returns at once (synced null); the daemon still catches up."""
        out = json.loads(running.cli("move", "13_bug_crash", "4_merge", "--no-wait", "--json",
                                     check=True).stdout)
        assert out["synced"] is None and out["to_stage"] == "4_merge"
        running.wait_row("13_bug_crash", lambda r: r["stage"] == "4_merge")
        text = running.cli("move", "13", "1_backlog", check=True).stdout
        assert text == "moved 13_bug_crash: 4_merge -> 1_backlog\n"
        again = running.cli("move", "13", "1_backlog", check=True).stdout
        assert again == "13_bug_crash is already in 1_backlog\n"

    def test_without_a_daemon(self, stories: Stories, tmp_path: Path) -> None:
        """With no daemon holding the database, move renames and does not wait."""
        stories.write("1_backlog", "5_story_x")
        result = pipelined(stories, tmp_path / "none.db", "move", "5", "4_merge", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["synced"] is None
        assert stories.path("4_merge", "5_story_x").is_file()

    def test_nothing_goes_out_of_the_root_through_a_stage_symlink(
            self, stories: Stories, tmp_path: Path) -> None:
        """A stage folder that is a symlink out of the root (a daemon refuses it at the
        start, and takes it as unreadable when it appears later): `new` and `move`
        write nothing out there, and a file out there is no story to move in."""
        stories.write("1_backlog", "5_story_x")
        folder, elsewhere = stories.root / "2_current", tmp_path / "elsewhere"
        folder.rename(elsewhere)
        folder.symlink_to(elsewhere)
        (elsewhere / "6_story_outside.md").write_text("---\nname: outside\n---\n")
        db = tmp_path / "none.db"
        for args in (("new", "Escapee", "--stage", "2_current"), ("move", "5", "2_current")):
            result = pipelined(stories, db, *args)
            assert result.returncode == 1, result
            ((line,),) = [result.stderr.strip().splitlines()]
            assert line.startswith("Error: ") and "symlink out of the root" in line, line
        result = pipelined(stories, db, "move", "6", "1_backlog")
        assert (result.returncode, result.stderr.strip()) == (1, "Error: no story '6'")
        assert sorted(p.name for p in elsewhere.iterdir()) == ["6_story_outside.md"]
        assert stories.path("1_backlog", "5_story_x").is_file()

    def test_unknown_id_or_stage(self, running: DaemonProcess, stories: Stories) -> None:
        """An unknown id, stage, or an ambiguous number: one line, exit 1, nothing moved."""
        stories.write("2_current", "12_story_other")
        wait_until(lambda: running.row("12_story_other"), what="second 12")
        for args, line in (
            (("move", "404", "2_current"), "Error: no story '404'"),
            (("move", "404_story_x", "2_current"), "Error: no story '404_story_x'"),
            (("move", "13", "3_review"),
             "Error: unknown stage '3_review' (stages: 1_backlog, 2_current, 4_merge)"),
            (("move", "12", "4_merge"), "Error: '12' matches more than one story file: "
             "1_backlog/12_story_login.md, 2_current/12_story_other.md (give the full id; "
             "`pipelined doctor` shows conflicts)"),
        ):
            result = running.cli(*args)
            assert result.returncode == 1
            assert result.stderr.strip().splitlines() == [line]
        # One id in two stages, by its number or its full id: a conflict, never "give
        # the full id" (which said the same again when the full id was given).
        stories.write("4_merge", "13_bug_crash")
        wait_until(lambda: len(running.query(
            "SELECT 1 FROM file_signatures WHERE story_id = '13_bug_crash'")) == 2,
                   what="the copy seen")
        for ref in ("13", "13_bug_crash"):
            result = running.cli("move", ref, "1_backlog")
            assert result.returncode == 1
            assert result.stderr.strip().splitlines() == [
                f"Error: '{ref}' matches more than one story file: 2_current/13_bug_crash.md, "
                "4_merge/13_bug_crash.md (the same id in two stages is a conflict; remove one "
                "copy; `pipelined doctor` shows conflicts)"]
        stories.path("4_merge", "13_bug_crash").unlink()
        assert stories.path("2_current", "13_bug_crash").is_file()
