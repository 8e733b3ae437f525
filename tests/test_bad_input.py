"""Bad input made while the daemon runs: each case is tracked as docs/design.md says.

Every test starts the daemon on a root with a few good stories, makes the bad
input, and checks that the bad file is handled as the contract says, that the
daemon is still alive and still following other changes, and that the good
stories' rows did not change. `doctor` names every file with an error or a
conflict and exits non-zero while one exists, 0 once it is fixed.
(Malformed YAML, non-UTF-8, empty and wrong-type files are in test_bad_files.py.)
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    STAGES,
    DaemonProcess,
    Stories,
    folder_matches_db,
    modes_bind_prefix,
    needs_modes,
    observe,
    story_text,
    wait_until,
)

MIB = 1024 * 1024
SECRET = "SECRET-7f3a9c-outside-the-root"


# -- helpers ------------------------------------------------------------------------




def doctor_json(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    result = daemon.cli("doctor", "--json")
    return result.returncode, json.loads(result.stdout)


def doctor_clean(daemon: DaemonProcess) -> None:
    wait_until(lambda: daemon.cli("doctor").returncode == 0, 10, "doctor to report no problem")


def alive(daemon: DaemonProcess) -> bool:
    return daemon.proc is not None and daemon.proc.poll() is None


class Baseline:
    """Good stories in every stage, and a check that the daemon still follows changes."""

    def __init__(self, stories: Stories, daemon: DaemonProcess) -> None:
        self.stories = stories
        self.daemon = daemon
        self.ids = []
        for k, stage in enumerate(STAGES * 2):
            story_id = f"{900 + k}_story_good"
            stories.write(stage, story_id, name=f"Good {k}", agent="a", retry_count=k)
            self.ids.append(story_id)
        self.rows: dict[str, dict[str, Any]] = {}
        self._markers = 0

    def snapshot(self) -> None:
        rows = self.daemon.rows()
        self.rows = {i: rows[i] for i in self.ids}

    def check(self, timeout: float = 30.0) -> None:
        """The daemon is alive, sees a new story, and the good rows are unchanged."""
        assert alive(self.daemon), self.daemon.log_tail()
        self._markers += 1
        marker = f"{990 + self._markers}_story_marker"
        self.stories.write("1_backlog", marker, name="marker")
        self.daemon.wait_row(marker, timeout=timeout)
        rows = self.daemon.rows()
        assert {i: rows.get(i) for i in self.ids} == self.rows


@pytest.fixture
def good(stories: Stories, daemon: DaemonProcess) -> Baseline:
    """The good stories, and the daemon started on them."""
    baseline = Baseline(stories, daemon)
    daemon.start()
    baseline.snapshot()
    return baseline


# -- tests --------------------------------------------------------------------------


class TestNoFrontMatter:
    def test_plain_markdown_is_a_story_with_null_fields(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline
    ) -> None:
        """A file with no front matter is tracked: null fields, exact content, no error."""
        text = "# Just a heading\n\nNo front matter at all.\n\n---\nname: not front matter\n---\n"
        stories.write("2_current", "40_story_plain", text)
        row = daemon.wait_row("40_story_plain")
        assert row["stage"] == "2_current"
        assert row["content"] == text
        assert [row[k] for k in ("name", "agent", "retry_count", "blocked", "depends_on")] == [
            None] * 5
        assert daemon.errors("40_story_plain") == []  # docs/sync.md: no front matter is no error
        good.check()
        doctor_clean(daemon)

        stories.write("2_current", "40_story_plain", name="Now with front matter")
        daemon.wait_row("40_story_plain", lambda r: r["name"] == "Now with front matter")


class TestOversizedFile:
    def test_three_megabyte_file(self, stories: Stories, daemon: DaemonProcess,
                                 good: Baseline) -> None:
        """A 3 MB file (default 1 MiB limit): tracked, content NULL, error recorded, named by
        doctor (exit 1); once it shrinks the content comes back and doctor exits 0."""
        big = "---\nname: big\nagent: loader\n---\n" + ("x" * 1023 + "\n") * (3 * 1024)
        assert len(big.encode()) > 3 * MIB
        stories.write("1_backlog", "41_story_huge", big)
        row = daemon.wait_row("41_story_huge")
        assert row["stage"] == "1_backlog"
        assert row["content"] is None
        assert row["name"] is None and row["agent"] is None
        errors = daemon.errors("41_story_huge")
        assert len(errors) == 1 and errors[0][0] == "too_large"
        assert f"over the {MIB}-byte limit" in errors[0][1]
        good.check()

        code, report = doctor_json(daemon)
        assert code == 1
        assert [e["id"] for e in report["parse_errors"]] == ["41_story_huge"]
        text = daemon.cli("doctor")
        assert text.returncode == 1 and "41_story_huge" in text.stdout
        shown = json.loads(daemon.cli("show", "41_story_huge", "--json", check=True).stdout)
        assert shown["content"] is None
        assert shown["errors"] == [{"code": c, "message": m} for c, m in errors]

        small = story_text(name="small again")
        stories.write("1_backlog", "41_story_huge", small)
        row = daemon.wait_row("41_story_huge", lambda r: r["content"] == small)
        assert row["name"] == "small again"
        assert daemon.errors("41_story_huge") == []
        doctor_clean(daemon)

    def test_good_story_grown_past_the_limit_drops_its_content(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline
    ) -> None:
        """A tracked story that grows to 3 MB keeps its row, but its old content and fields
        are not left behind."""
        stories.write("4_merge", "42_story_grows", name="small", agent="b")
        daemon.wait_row("42_story_grows", lambda r: r["name"] == "small")
        with stories.path("4_merge", "42_story_grows").open("a") as handle:
            handle.write("y" * (3 * MIB))
        row = daemon.wait_row("42_story_grows", lambda r: r["content"] is None)
        assert (row["stage"], row["name"], row["agent"]) == ("4_merge", None, None)
        assert daemon.errors("42_story_grows")
        good.check()


class TestNotARegularFile:
    def test_folder_named_like_a_story_is_ignored(self, stories: Stories,
                                                  daemon: DaemonProcess,
                                                  good: Baseline) -> None:
        """A folder `12_x.md` inside a stage (with story-like files in it) is no story, is
        no conflict with a real `12_x.md` elsewhere, and doctor sees nothing wrong."""
        folder = stories.root / "1_backlog" / "12_x.md"
        folder.mkdir()
        (folder / "13_story_inner.md").write_text(story_text(name="inner"))
        (folder / "12_x.md").write_text(story_text(name="nested"))
        stories.write("2_current", "12_x", name="the real one")
        row = daemon.wait_row("12_x")
        assert row["stage"] == "2_current" and row["name"] == "the real one"
        good.check()
        rows = daemon.rows()
        assert "13_story_inner" not in rows
        assert rows["12_x"]["stage"] == "2_current"
        assert [p for (p,) in daemon.query(
            "SELECT path FROM file_signatures WHERE story_id = '12_x'")] == ["2_current/12_x.md"]
        doctor_clean(daemon)

        os.rename(folder, stories.root / "4_merge" / "12_x.md")  # a folder "move" of the id
        (stories.root / "4_merge" / "12_x.md" / "14_story_more.md").write_text(story_text())
        good.check()
        assert daemon.row("12_x")["stage"] == "2_current"  # type: ignore[index]
        assert "14_story_more" not in daemon.rows()
        daemon.stop()
        daemon.start()  # the startup stat pass ignores it too
        assert daemon.row("12_x")["stage"] == "2_current"  # type: ignore[index]
        assert set(daemon.rows()) == {*good.ids, "12_x", "991_story_marker",
                                      "992_story_marker"}
        doctor_clean(daemon)

    def test_fifo_named_like_a_story_is_ignored(self, stories: Stories, daemon: DaemonProcess,
                                                good: Baseline) -> None:
        """A named pipe `43_story_pipe.md` is never opened (a read would block forever)."""
        os.mkfifo(stories.root / "2_current" / "43_story_pipe.md")
        good.check()
        assert daemon.row("43_story_pipe") is None
        doctor_clean(daemon)


class TestUnusualFileNames:
    def test_spaces_and_non_ascii_letters(self, stories: Stories, daemon: DaemonProcess,
                                          good: Baseline) -> None:
        """`20_story_café au lait.md` is a story like any other: created, shown, edited,
        moved and deleted, its id exactly the file name."""
        story_id = "20_story_café au lait"
        text = story_text(name="Café au lait ☕", body="Crème brûlée.\n")
        stories.write("1_backlog", story_id, text)
        row = daemon.wait_row(story_id)
        assert (row["stage"], row["name"], row["content"]) == ("1_backlog", "Café au lait ☕",
                                                              text)
        shown = json.loads(daemon.cli("show", story_id, "--json", check=True).stdout)
        assert shown["id"] == story_id and shown["content"] == text
        assert shown["files"] == [{"path": f"1_backlog/{story_id}.md", "winner": True}]
        listed = json.loads(daemon.cli("ls", "--json", check=True).stdout)
        assert story_id in {i["id"] for i in listed}

        created = row["created_at"]
        stories.write("1_backlog", story_id, name="Édité")
        daemon.wait_row(story_id, lambda r: r["name"] == "Édité")
        stories.move(story_id, "1_backlog", "2_current")
        row = daemon.wait_row(story_id, lambda r: r["stage"] == "2_current")
        assert row["created_at"] == created
        good.check()
        doctor_clean(daemon)
        stories.path("2_current", story_id).unlink()
        daemon.wait_gone(story_id)

    def test_decomposed_unicode_name_is_its_own_id(self, stories: Stories,
                                                   daemon: DaemonProcess,
                                                   good: Baseline) -> None:
        """The NFC and NFD spellings of `café` are two file names, so two ids, kept exactly."""
        nfc = "21_story_café"
        nfd = unicodedata.normalize("NFD", nfc)
        assert nfc != nfd
        stories.write("1_backlog", nfc, name="composed")
        stories.write("4_merge", "22" + nfd[2:], name="decomposed")
        assert daemon.wait_row(nfc)["name"] == "composed"
        assert daemon.wait_row("22" + nfd[2:])["name"] == "decomposed"
        good.check()

    def test_file_name_that_is_not_utf8(self, stories: Stories, daemon: DaemonProcess,
                                        good: Baseline) -> None:
        """A story file whose name is not valid UTF-8 (`23_story_\\xff.md`) never stops the
        daemon from following every other story (whether the odd file is tracked or
        ignored is the daemon's choice)."""
        odd = os.fsencode(stories.root / "2_current") + b"/23_story_\xff.md"
        with open(odd, "w") as handle:
            handle.write(story_text(name="odd bytes"))
        good.check(timeout=5)  # fails: the marker story never arrives
        stories.write("2_current", "24_story_after_odd", name="after")
        daemon.wait_row("24_story_after_odd", timeout=5)
        assert alive(daemon)

    def test_file_name_that_is_not_utf8_present_at_startup(
        self, stories: Stories, daemon: DaemonProcess
    ) -> None:
        """With a non-UTF-8 file name already in a stage, the daemon still starts and
        tracks the other stories."""
        stories.write("1_backlog", "25_story_fine", name="fine")
        odd = os.fsencode(stories.root / "2_current") + b"/23_story_\xff.md"
        with open(odd, "w") as handle:
            handle.write(story_text(name="odd bytes"))
        daemon.start()  # fails: the daemon exits 1 before READY
        assert daemon.wait_row("25_story_fine")["name"] == "fine"
        assert alive(daemon)


class TestSymlinks:
    @staticmethod
    def secret_leaked(daemon: DaemonProcess) -> bool:
        """The outside file's text in any row's content, or in its extra keys."""
        rows = daemon.rows()
        extras = daemon.query("SELECT extra, errors FROM story_extras")
        return (any(SECRET in (r["content"] or "") or SECRET in (r["name"] or "")
                    for r in rows.values())
                or any(SECRET in (e or "") or SECRET in (x or "") for e, x in extras))

    def test_symlink_out_of_the_root_never_reaches_the_database(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline, tmp_path: Path
    ) -> None:
        """Absolute, relative and chained symlinks to a file outside the root, and one to a
        folder outside: none becomes a story, and no row ever holds the outside text."""
        outside = tmp_path / "outside" / "secret.md"
        outside.parent.mkdir()
        outside.write_text(f"---\nname: {SECRET}\nsecret_key: {SECRET}\n---\n{SECRET}\n")
        stage = stories.root / "1_backlog"
        (stage / "50_story_abs.md").symlink_to(outside)
        (stage / "51_story_rel.md").symlink_to(Path("../../outside/secret.md"))
        (stories.root / "hop.md").symlink_to(outside)  # inside the root, not in a stage
        (stage / "52_story_chain.md").symlink_to(stories.root / "hop.md")
        (stage / "53_story_dir.md").symlink_to(outside.parent, target_is_directory=True)
        assert (stage / "51_story_rel.md").read_text() == outside.read_text()
        good.check()
        assert observe(lambda: not self.secret_leaked(daemon), seconds=0.5)
        assert not {"50_story_abs", "51_story_rel", "52_story_chain", "53_story_dir"} & set(
            daemon.rows())

        outside.write_text(f"---\nname: edited {SECRET}\n---\n{SECRET}\n")  # no event inside
        good.check()
        assert not self.secret_leaked(daemon)
        doctor_clean(daemon)
        daemon.stop()
        daemon.start()
        assert not self.secret_leaked(daemon)
        assert "50_story_abs" not in daemon.rows()

    def test_inside_symlink_retargeted_out_of_the_root(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline, tmp_path: Path
    ) -> None:
        """A symlink story pointing inside the root is followed; atomically retargeted to a
        file outside (`ln -sfn`), it stops being a story and the outside text never lands."""
        outside = tmp_path / "secret.md"
        outside.write_text(f"---\nname: {SECRET}\n---\n{SECRET}\n")
        target = stories.write("4_merge", "54_story_target", name="inside target")
        link = stories.root / "2_current" / "55_story_alias.md"
        link.symlink_to(target)
        assert daemon.wait_row("55_story_alias")["name"] == "inside target"

        tmp_link = stories.root / "2_current" / ".55_story_alias.md.tmp"
        tmp_link.symlink_to(outside)
        os.replace(tmp_link, link)
        def gone_without_leak() -> bool:
            assert not self.secret_leaked(daemon)  # checked at every poll
            return daemon.row("55_story_alias") is None

        wait_until(gone_without_leak, timeout=10, what="the retargeted symlink's row to go")
        good.check()
        assert not self.secret_leaked(daemon)
        assert daemon.row("54_story_target")["name"] == "inside target"  # type: ignore[index]

    def test_symlink_story_follows_edits_of_its_inside_target(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline
    ) -> None:
        """A symlink story pointing to a file inside the root is followed, so its content
        must follow edits made to the target file (content always equals the file's text)."""
        target = stories.write("4_merge", "61_story_real", name="v1")
        alias = stories.root / "1_backlog" / "62_story_alias.md"
        alias.symlink_to(Path("../4_merge/61_story_real.md"))
        assert daemon.wait_row("62_story_alias")["name"] == "v1"
        stories.write("4_merge", "61_story_real", name="v2")
        daemon.wait_row("61_story_real", lambda r: r["name"] == "v2")
        row = daemon.wait_row("62_story_alias", lambda r: r["name"] == "v2", timeout=5)
        assert row["content"] == target.read_text()

    def test_symlink_loops(self, stories: Stories, daemon: DaemonProcess,
                           good: Baseline) -> None:
        """A self-loop and a two-link loop are no stories; a restart with them in place
        still reaches READY and doctor is clean."""
        stage = stories.root / "2_current"
        (stage / "56_story_self.md").symlink_to("56_story_self.md")
        (stage / "57_story_a.md").symlink_to("58_story_b.md")
        (stage / "58_story_b.md").symlink_to("57_story_a.md")
        (stories.root / "4_merge" / "59_story_cross.md").symlink_to(stage / "57_story_a.md")
        good.check()
        loops = {"56_story_self", "57_story_a", "58_story_b", "59_story_cross"}
        assert not loops & set(daemon.rows())
        doctor_clean(daemon)
        daemon.stop()
        daemon.start()
        good.check()
        assert not loops & set(daemon.rows())
        doctor_clean(daemon)


class TestSameIdInTwoStages:
    @staticmethod
    def place(stories: Stories, tmp_path: Path, stage: str, story_id: str, name: str,
              mtime_s: int) -> Path:
        """Write a copy outside, set its mtime, and move it in (a rename keeps the mtime)."""
        staging = tmp_path / f"staging-{stage}.md"
        staging.write_text(story_text(name=name))
        os.utime(staging, (mtime_s, mtime_s))
        path = stories.path(stage, story_id)
        os.rename(staging, path)
        return path

    def test_conflict_one_row_named_by_doctor_resolved_when_a_copy_goes(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline, tmp_path: Path
    ) -> None:
        """Three copies of one id: one row (the newest file, then the later stage), doctor
        names the conflict and exits 1; removing copies resolves it without a delete."""
        story_id = "60_story_thrice"
        t0 = 1_700_000_000
        self.place(stories, tmp_path, "2_current", story_id, "current copy", t0)
        created = daemon.wait_row(story_id)["created_at"]
        self.place(stories, tmp_path, "4_merge", story_id, "merge copy", t0)
        newest = self.place(stories, tmp_path, "1_backlog", story_id, "backlog copy", t0 + 60)

        def doctor_conflict() -> dict[str, Any] | None:
            code, report = doctor_json(daemon)
            found = [c for c in report["conflicts"] if c["id"] == story_id]
            return found[0] if code == 1 and found and len(found[0]["others"]) == 2 else None

        conflict = wait_until(doctor_conflict, 10, "doctor to name the three-way conflict")
        assert conflict == {"id": story_id, "winner": f"1_backlog/{story_id}.md",
                            "others": [f"2_current/{story_id}.md", f"4_merge/{story_id}.md"]}
        row = daemon.row(story_id)
        assert row is not None and (row["stage"], row["name"]) == ("1_backlog", "backlog copy")
        assert len([i for i in daemon.rows() if i == story_id]) == 1
        text = daemon.cli("doctor")
        assert text.returncode == 1 and story_id in text.stdout and "conflict" in text.stdout
        good.check()

        newest.unlink()  # the two left have the same mtime: the later stage wins
        row = daemon.wait_row(story_id, lambda r: r["stage"] == "4_merge")
        assert row["name"] == "merge copy"
        conflict = wait_until(doctor_conflict_pair(daemon, story_id), 10, "two-way conflict")
        assert conflict["winner"] == f"4_merge/{story_id}.md"
        assert conflict["others"] == [f"2_current/{story_id}.md"]

        stories.path("2_current", story_id).unlink()  # the loser goes: resolved
        doctor_clean(daemon)
        row = daemon.row(story_id)
        assert row is not None and (row["stage"], row["name"]) == ("4_merge", "merge copy")
        assert row["created_at"] == created
        assert daemon.query("SELECT path, winner FROM file_signatures WHERE story_id = ?",
                            (story_id,)) == [(f"4_merge/{story_id}.md", 1)]
        assert not [e for e in daemon.log_events() if e.get("event") == "story.deleted"]
        good.check()


def doctor_conflict_pair(daemon: DaemonProcess, story_id: str) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        code, report = doctor_json(daemon)
        found = [c for c in report["conflicts"] if c["id"] == story_id]
        return found[0] if code == 1 and found and len(found[0]["others"]) == 1 else None
    return check


class TestDoctorExitCode:
    def test_non_zero_while_any_problem_exists_zero_once_all_fixed(
        self, stories: Stories, daemon: DaemonProcess, good: Baseline
    ) -> None:
        """Four problems at once; doctor names each and stays non-zero until the last one
        is fixed, then exits 0."""
        stories.write("1_backlog", "70_story_yaml", "---\nname: [unclosed\n---\n")
        stories.write("2_current", "71_story_big", "---\nname: big\n---\n" + "z" * (3 * MIB))
        stories.write("4_merge", "72_story_type", "---\nname: typed\nretry_count: lots\n---\n")
        stories.write("1_backlog", "73_story_twin", name="one")
        stories.write("2_current", "73_story_twin", name="two")
        problems = {"70_story_yaml", "71_story_big", "72_story_type", "73_story_twin"}

        def named() -> set[str]:
            code, report = doctor_json(daemon)
            ids = {e["id"] for e in report["parse_errors"]} | {
                c["id"] for c in report["conflicts"]}
            assert (code == 0) == report["ok"]
            return ids if code == 1 else set()

        wait_until(lambda: named() == problems, 10, "doctor to name all four problems")
        text = daemon.cli("doctor")
        assert text.returncode == 1
        assert all(i in text.stdout for i in problems)
        good.check()

        fixes: list[Callable[[], object]] = [
            lambda: stories.write("1_backlog", "70_story_yaml", name="fixed"),
            lambda: stories.write("2_current", "71_story_big", name="small now"),
            lambda: stories.write("4_merge", "72_story_type", name="typed", retry_count=1),
            lambda: stories.path("1_backlog", "73_story_twin").unlink(),
        ]
        fixed = ["70_story_yaml", "71_story_big", "72_story_type", "73_story_twin"]
        for fix, story_id in zip(fixes, fixed, strict=True):
            fix()
            problems.discard(story_id)
            if problems:
                wait_until(lambda: named() == problems, 10, f"doctor to drop {story_id}")
        doctor_clean(daemon)
        wait_until(lambda: folder_matches_db(stories, daemon), what="rows equal to the folders")
        good.check()


NOT_AS_ROOT = needs_modes  # file modes must bind the daemon


@pytest.fixture
def daemon_bound_by_modes(stories: Stories, daemon: DaemonProcess) -> Baseline:
    """`good`, with the daemon bound by file modes: as root, without CAP_DAC_OVERRIDE."""
    daemon.prefix = list(modes_bind_prefix() or ())
    baseline = Baseline(stories, daemon)
    daemon.start()
    baseline.snapshot()
    return baseline


def write_unreadable(path: Path, text: str) -> None:
    """Create a file with mode 000 and write it through the creating fd (the mode only
    blocks later opens), so the daemon never sees it readable."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o000)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class TestUnreadableFile:
    @NOT_AS_ROOT
    def test_file_without_read_permission_is_tracked_with_an_error(
        self, stories: Stories, daemon: DaemonProcess, daemon_bound_by_modes: Baseline
    ) -> None:
        """A story file with mode 000 is tracked with a 'cannot read' error and no content,
        and doctor names it and exits 1."""
        write_unreadable(stories.path("2_current", "80_story_locked"),
                         story_text(name="locked away"))
        row = daemon.wait_row("80_story_locked")
        assert row["stage"] == "2_current"
        assert row["content"] is None and row["name"] is None
        assert daemon.errors("80_story_locked") == [
            ("unreadable", "cannot read the file (Permission denied)")]
        code, report = doctor_json(daemon)
        assert code == 1 and [e["id"] for e in report["parse_errors"]] == ["80_story_locked"]
        daemon_bound_by_modes.check()

    @NOT_AS_ROOT
    def test_file_made_readable_again_is_read(self, stories: Stories, daemon: DaemonProcess,
                                              daemon_bound_by_modes: Baseline) -> None:
        """Once the unreadable file gets its read permission back (chmod only: mtime, size and
        inode unchanged), its content and fields arrive, the error goes, doctor exits 0."""
        path = stories.path("2_current", "81_story_unlocked")
        text = story_text(name="unlocked")
        write_unreadable(path, text)
        daemon.wait_row("81_story_unlocked")
        assert daemon.errors("81_story_unlocked")
        os.chmod(path, 0o644)
        row = daemon.wait_row("81_story_unlocked", lambda r: r["content"] == text, timeout=10)
        assert row["name"] == "unlocked"
        assert daemon.errors("81_story_unlocked") == []
        doctor_clean(daemon)

    @NOT_AS_ROOT
    def test_made_readable_while_stopped_is_read_at_the_next_start(
        self, stories: Stories, daemon: DaemonProcess, daemon_bound_by_modes: Baseline
    ) -> None:
        """A chmod changes no signature: the database remembers which files could not be
        read (a column, not the error's wording) and the next start reads them again."""
        path = stories.path("2_current", "82_story_later")
        text = story_text(name="later")
        write_unreadable(path, text)
        daemon.wait_row("82_story_later")
        assert daemon.query("SELECT unreadable FROM story_extras WHERE id = ?",
                            ("82_story_later",)) == [(1,)]
        assert daemon.stop() == 0
        os.chmod(path, 0o644)
        daemon.start()
        row = daemon.wait_row("82_story_later", lambda r: r["content"] == text, timeout=10)
        assert row["name"] == "later"
        assert daemon.query("SELECT unreadable FROM story_extras WHERE id = ?",
                            ("82_story_later",)) == [(0,)]


class TestSymlinkTargetOutsideStages:
    def test_target_in_an_unwatched_folder_is_followed(self, stories: Stories,
                                                       daemon: DaemonProcess) -> None:
        """A story symlinked to a file in an unwatched folder inside the root follows
        edits of that file within seconds (no event ever names the story)."""
        notes = stories.root / "notes"
        notes.mkdir()
        target = notes / "t.md"
        target.write_text("---\nname: target v1\n---\n")
        (stories.root / "1_backlog" / "70_story_linked.md").symlink_to(target)
        daemon.start()
        daemon.wait_row("70_story_linked", lambda r: r["name"] == "target v1")
        target.write_text("---\nname: target v2\n---\n")
        daemon.wait_row("70_story_linked", lambda r: r["name"] == "target v2", timeout=15)
