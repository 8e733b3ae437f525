"""Real git operations on a checkout: stories follow without delete + create."""

from __future__ import annotations

import shutil

import pytest
from conftest import STAGES, DaemonProcess, Stories, folder_matches_db, git, wait_until

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(stories: Stories) -> Stories:
    git(stories.root, "init", "-q", "-b", "main")
    for stage in STAGES:  # git keeps no empty folder; teams keep a .gitkeep
        (stories.root / stage / ".gitkeep").write_text("")
    for n in range(150):
        stories.write(STAGES[0] if n % 2 else STAGES[1], f"{n + 1}_story_item",
                      name=f"Item {n}", retry_count=n % 3)
    git(stories.root, "add", "-A")
    git(stories.root, "commit", "-qm", "stories")
    return stories


class TestGit:
    def test_checkout_of_a_branch_with_many_moves(self, repo: Stories,
                                                  daemon: DaemonProcess) -> None:
        """`git checkout` of a branch where 100 stories changed stage keeps created_at."""
        git(repo.root, "checkout", "-q", "-b", "moved")
        for n in range(100):
            story_id = f"{n + 1}_story_item"
            src = STAGES[0] if n % 2 else STAGES[1]
            git(repo.root, "mv", f"{src}/{story_id}.md", f"4_merge/{story_id}.md")
        (repo.root / "1_backlog" / "1000_story_branch_only.md").write_text("---\nname: b\n---\n")
        git(repo.root, "add", "-A")
        git(repo.root, "commit", "-qm", "move to merge")
        git(repo.root, "checkout", "-q", "main")

        daemon.start()
        created = {i: r["created_at"] for i, r in daemon.rows().items()}
        assert len(created) == 150
        git(repo.root, "checkout", "-q", "moved")
        wait_until(lambda: folder_matches_db(repo, daemon), what="rows equal to the folders")
        rows = daemon.rows()
        assert sum(r["stage"] == "4_merge" for r in rows.values()) == 100
        assert all(rows[i]["created_at"] == c for i, c in created.items())
        assert all(rows[f"{n + 1}_story_item"]["retry_count"] == 0 for n in range(100))
        assert not [e for e in daemon.log_events() if e.get("event") == "story.deleted"]

        git(repo.root, "checkout", "-q", "main")
        wait_until(lambda: folder_matches_db(repo, daemon), what="rows back on main")
        rows = daemon.rows()
        assert "1000_story_branch_only" not in rows
        assert all(rows[i]["created_at"] == c for i, c in created.items())

    def test_git_edits_and_stash(self, repo: Stories, daemon: DaemonProcess) -> None:
        """Edits arriving via `git stash` / `git stash pop` are edits, never deletes."""
        daemon.start()
        before = daemon.rows()
        for n in range(0, 40, 2):
            path = repo.root / STAGES[1] / f"{n + 1}_story_item.md"
            path.write_text(path.read_text().replace(f"Item {n}", f"Edited {n}"))
        wait_until(lambda: daemon.row("1_story_item")["name"] == "Edited 0",  # type: ignore[index]
                   what="local edit")
        git(repo.root, "stash", "-q")
        wait_until(lambda: folder_matches_db(repo, daemon), what="stash applied")
        assert daemon.row("1_story_item")["name"] == "Item 0"  # type: ignore[index]
        git(repo.root, "stash", "pop", "-q")
        wait_until(lambda: folder_matches_db(repo, daemon), what="stash popped")
        rows = daemon.rows()
        assert rows["1_story_item"]["name"] == "Edited 0"
        assert all(rows[i]["created_at"] == r["created_at"] for i, r in before.items())

    def test_git_dir_is_not_tracked(self, repo: Stories, daemon: DaemonProcess) -> None:
        """Nothing under .git/ becomes a story, even with .md files in it."""
        daemon.start()
        (repo.root / ".git" / "1_backlog").mkdir()
        (repo.root / ".git" / "1_backlog" / "999_story_fake.md").write_text("---\nname: x\n---\n")
        repo.write("1_backlog", "998_story_marker")
        daemon.wait_row("998_story_marker")
        assert daemon.row("999_story_fake") is None
