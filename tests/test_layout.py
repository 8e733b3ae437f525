"""Unit tests of `pipelined.layout`: which paths are stories, and the stat pass."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from pipelined.errors import RootError
from pipelined.layout import (
    OUT_OF_ROOT,
    FileSignature,
    _read_small_file,
    check_root,
    find_git_dir,
    is_story_name,
    stage_problem,
    stages_out_of_root,
    stat_pass,
    stat_signatures,
    story_ref,
)

STAGES = ("1_backlog", "2_current", "4_merge")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A stories root with the three watched stage folders and one unwatched one."""
    root = tmp_path / "root"
    for stage in (*STAGES, "3_qa"):
        (root / stage).mkdir(parents=True)
    return root


class TestIsStoryName:
    @pytest.mark.parametrize(
        "name",
        [
            "10_story_login.md",
            "9870_bug_crash.md",
            "1_x.md",
            "007_bond.md",
            "12_with spaces and ünïcode.md",
            "12_dots.in.name.md",
        ],
    )
    def test_story_names(self, name: str) -> None:
        """`<number>_<anything>.md` is a story file name."""
        assert is_story_name(name) is True

    @pytest.mark.parametrize(
        "name",
        [
            "10_x.md.swp",  # vim swap
            ".10_x.md.swp",  # vim swap, hidden
            "10_x.md.swx",
            ".10_x.md.swo",
            "10_x.md~",  # backup
            "#10_x.md#",  # emacs autosave
            ".#10_x.md",  # emacs lock
            "4913",  # vim's write test
            "10_x.md.tmp",
            "10_x.md___jb_tmp___",  # JetBrains safe write
            "10_x.md___jb_old___",
            ".10_x.md",  # hidden
            ".md",
            "10_x.txt",  # not markdown
            "10_x.MD",
            "10_x",
            "story.md",  # no number
            "x_10.md",
            "10.md",  # number but no underscore
            "_10_x.md",
            "10-x.md",
        ],
    )
    def test_not_story_names(self, name: str) -> None:
        """Editor leftovers, hidden files, non-.md files and names without `<number>_` are not."""
        assert is_story_name(name) is False


class TestStoryRef:
    def test_story_in_a_watched_stage(self, root: Path) -> None:
        """A story file directly in a watched stage gives (stage, id)."""
        path = str(root / "2_current" / "10_story_login.md")

        assert story_ref(root, path, STAGES) == ("2_current", "10_story_login")

    def test_unwatched_stage_is_ignored(self, root: Path) -> None:
        """A story file in a stage folder that is not watched is ignored."""
        assert story_ref(root, str(root / "3_qa" / "10_x.md"), STAGES) is None

    def test_sub_folder_is_ignored(self, root: Path) -> None:
        """A story-looking file in a sub-folder of a stage is ignored."""
        path = str(root / "1_backlog" / "archive" / "10_x.md")

        assert story_ref(root, path, STAGES) is None

    def test_file_directly_in_root_is_ignored(self, root: Path) -> None:
        """A story-looking file directly in the root is no story."""
        assert story_ref(root, str(root / "10_x.md"), STAGES) is None

    def test_outside_root_is_ignored(self, root: Path, tmp_path: Path) -> None:
        """A path outside the root is ignored, even with a stage-like shape."""
        assert story_ref(root, str(tmp_path / "1_backlog" / "10_x.md"), STAGES) is None

    def test_git_folder_is_ignored(self, root: Path) -> None:
        """Anything under .git is ignored."""
        assert story_ref(root, str(root / ".git" / "1_backlog" / "10_x.md"), STAGES) is None

    def test_leftover_in_stage_is_ignored(self, root: Path) -> None:
        """An editor leftover in a watched stage is ignored."""
        assert story_ref(root, str(root / "1_backlog" / ".10_x.md.swp"), STAGES) is None

    def test_stage_folder_itself_is_no_story(self, root: Path) -> None:
        """The stage folder path is no story."""
        assert story_ref(root, str(root / "1_backlog"), STAGES) is None

    def test_custom_stages(self, root: Path) -> None:
        """Only the configured stages count."""
        path = str(root / "3_qa" / "10_x.md")

        assert story_ref(root, path, ("3_qa",)) == ("3_qa", "10_x")
        assert story_ref(root, str(root / "1_backlog" / "10_x.md"), ("3_qa",)) is None


class TestStatPass:
    def test_finds_stories_with_signatures(self, root: Path) -> None:
        """Every story file in the watched stages is found with its stat signature."""
        path = root / "1_backlog" / "10_a.md"
        path.write_text("---\nname: a\n---\n")
        (root / "4_merge" / "20_b.md").write_text("b")
        st = path.stat()

        found = {f.story_id: f for f in stat_pass(root, STAGES)}

        assert set(found) == {"10_a", "20_b"}
        assert found["10_a"].stage == "1_backlog"
        assert found["10_a"].path == str(path)
        assert found["10_a"].rel_path == "1_backlog/10_a.md"
        assert found["10_a"].signature == FileSignature(st.st_mtime_ns, st.st_size, st.st_ino)
        assert found["20_b"].signature.size == 1

    def test_ignores_leftovers_hidden_and_other_files(self, root: Path) -> None:
        """Leftovers, hidden files and non-.md files are not listed."""
        stage = root / "2_current"
        for name in (
            "10_a.md",
            ".10_a.md.swp",
            "10_a.md~",
            "4913",
            "notes.txt",
            ".hidden.md",
            "10_a.md___jb_tmp___",
            "README.md",
        ):
            (stage / name).write_text("x")

        assert [f.story_id for f in stat_pass(root, STAGES)] == ["10_a"]

    def test_sub_folder_is_ignored(self, root: Path) -> None:
        """A sub-folder of a stage, even one named like a story, yields nothing."""
        (root / "1_backlog" / "archive").mkdir()
        (root / "1_backlog" / "archive" / "10_old.md").write_text("x")
        (root / "1_backlog" / "11_dir.md").mkdir()

        assert list(stat_pass(root, STAGES)) == []

    def test_unwatched_stage_is_ignored(self, root: Path) -> None:
        """Stories in a stage that is not watched are not listed."""
        (root / "3_qa" / "10_a.md").write_text("x")

        assert list(stat_pass(root, STAGES)) == []

    def test_missing_stage_folder_holds_nothing(self, root: Path) -> None:
        """A stage folder that does not exist is skipped without error."""
        (root / "2_current" / "10_a.md").write_text("x")

        found = list(stat_pass(root, ("1_backlog", "2_current", "9_gone")))

        assert [f.story_id for f in found] == ["10_a"]

    def test_symlink_out_of_root_is_skipped(self, root: Path, tmp_path: Path) -> None:
        """A story that is a symlink to a file outside the root is not followed."""
        outside = tmp_path / "outside.md"
        outside.write_text("secret")
        (root / "1_backlog" / "10_escape.md").symlink_to(outside)

        assert list(stat_pass(root, STAGES)) == []

    def test_symlink_inside_root_is_followed(self, root: Path) -> None:
        """A story symlinked to a file inside the root is listed with the target's stat."""
        target = root / "shared" / "target.md"
        target.parent.mkdir()
        target.write_text("twelve bytes")
        link = root / "2_current" / "10_linked.md"
        link.symlink_to(target)

        found = list(stat_pass(root, STAGES))

        assert [(f.story_id, f.stage) for f in found] == [("10_linked", "2_current")]
        assert found[0].signature.size == 12
        assert found[0].signature.inode == target.stat().st_ino

    def test_dangling_symlink_is_skipped(self, root: Path) -> None:
        """A symlink to nothing is skipped, not an error."""
        (root / "1_backlog" / "10_dangling.md").symlink_to(root / "nowhere.md")

        assert list(stat_pass(root, STAGES)) == []

    def test_relative_symlink_escaping_root_is_skipped(self, root: Path, tmp_path: Path) -> None:
        """A relative `../..` symlink that leaves the root is skipped too."""
        (tmp_path / "outside.md").write_text("x")
        (root / "1_backlog" / "10_rel.md").symlink_to(Path("..") / ".." / "outside.md")

        assert list(stat_pass(root, STAGES)) == []

    def test_root_given_through_a_symlink(self, root: Path, tmp_path: Path) -> None:
        """A root reached through a symlink still follows symlinks that stay inside it."""
        (root / "1_backlog" / "target.txt").write_text("x")
        (root / "1_backlog" / "10_a.md").symlink_to(root / "1_backlog" / "target.txt")
        alias = tmp_path / "alias"
        alias.symlink_to(root)

        assert [f.story_id for f in stat_pass(alias, STAGES)] == ["10_a"]

    def test_reads_no_file(self, root: Path) -> None:
        """The stat pass never opens a story file: an unreadable story is still listed."""
        path = root / "1_backlog" / "10_secret.md"
        path.write_text("x")
        path.chmod(0)
        try:
            assert [f.story_id for f in stat_pass(root, STAGES)] == ["10_secret"]
        finally:
            path.chmod(0o644)


class TestFindGitDir:
    def test_git_folder_in_root(self, tmp_path: Path) -> None:
        """The root's own .git folder is found."""
        (tmp_path / ".git").mkdir()

        assert find_git_dir(tmp_path) == (tmp_path / ".git").resolve()

    def test_git_folder_in_a_parent(self, tmp_path: Path) -> None:
        """A root inside a checkout finds the checkout's .git."""
        (tmp_path / ".git").mkdir()
        root = tmp_path / "docs" / "stories"
        root.mkdir(parents=True)

        assert find_git_dir(root) == (tmp_path / ".git").resolve()

    def test_worktree_git_file_relative(self, tmp_path: Path) -> None:
        """A `.git` file with a relative `gitdir:` resolves against its folder."""
        real = tmp_path / "main" / ".git" / "worktrees" / "wt"
        real.mkdir(parents=True)
        worktree = tmp_path / "wt"
        worktree.mkdir()
        (worktree / ".git").write_text("gitdir: ../main/.git/worktrees/wt\n")

        assert find_git_dir(worktree) == real.resolve()

    def test_worktree_git_file_absolute(self, tmp_path: Path) -> None:
        """A `.git` file with an absolute `gitdir:` points there."""
        real = tmp_path / "elsewhere"
        real.mkdir()
        worktree = tmp_path / "wt"
        worktree.mkdir()
        (worktree / ".git").write_text(f"gitdir: {real}\n")

        assert find_git_dir(worktree) == real

    def test_no_git(self, tmp_path: Path) -> None:
        """Outside any checkout there is no git folder."""
        root = tmp_path / "plain"
        root.mkdir()
        if find_git_dir(tmp_path) is not None:  # pragma: no cover - odd test host
            pytest.skip("the temporary folder is inside a git checkout")

        assert find_git_dir(root) is None

    def test_git_file_read_does_not_block_on_a_pipe(self, tmp_path: Path) -> None:
        """The `.git` file is read non-blocking and only if it is a regular file: a
        named pipe renamed over it after the is_file() check reads as no `gitdir:`
        instead of hanging the apply thread."""
        fifo = tmp_path / ".git"
        os.mkfifo(fifo)
        done: list[str] = []
        reader = threading.Thread(target=lambda: done.append(_read_small_file(fifo)),
                                  daemon=True)
        reader.start()
        reader.join(10)
        try:
            assert done == [""]
        finally:
            with contextlib.suppress(OSError):  # frees a reader stuck in open()
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


class TestStageFolderSymlinks:
    @pytest.mark.parametrize("leads_to", ["a folder out of the root", "the root itself"])
    def test_refused_at_the_start_and_unreadable_while_running(
            self, root: Path, tmp_path: Path, leads_to: str) -> None:
        """A stage folder that is a symlink out of the root, or to the root itself (whose
        files its reads refuse): a start refuses it with one line, and for a running
        daemon it is an unreadable folder. One to a folder inside the root is a stage."""
        target = tmp_path / "elsewhere" if leads_to != "the root itself" else root
        target.mkdir(exist_ok=True)
        (root / "2_current").rmdir()
        (root / "2_current").symlink_to(target)
        with pytest.raises(RootError, match="stage folder is a symlink out of the root"):
            check_root(root, STAGES)
        assert stage_problem(root, "2_current") == OUT_OF_ROOT
        assert stages_out_of_root(root, STAGES) == {"2_current"}
        unlistable: dict[str, str] = {}
        stat_signatures(root, STAGES, unlistable)
        assert unlistable == {"2_current": OUT_OF_ROOT}

    def test_one_inside_the_root_is_a_stage(self, root: Path) -> None:
        (root / "2_current").rmdir()
        (root / "folders" / "current").mkdir(parents=True)
        (root / "2_current").symlink_to(Path("folders") / "current")
        (root / "folders" / "current" / "5_story_x.md").write_text("---\nname: x\n---\n")
        assert check_root(root, STAGES) == root.resolve()
        assert stage_problem(root, "2_current") is None
        assert stages_out_of_root(root, STAGES) == frozenset()
        assert list(stat_signatures(root, STAGES)) == ["2_current/5_story_x.md"]
