"""Real git operations on a checkout of a few hundred stories.

Git never reports a move: a stage change is a delete of the old path and a
create of the new one, and an edit is a delete and a create of the same path.
Every test here runs the real `git` on a real checkout watched by the real
daemon, then checks that the rows equal the folders, that `created_at` is kept
for every story that only moved or changed (and that the daemon logged no
`story.deleted` / `story.created` for them), that deletes are really gone, and
that nothing under `.git/` is tracked.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    STAGES,
    DaemonProcess,
    Stories,
    folder_matches_db,
    git,
    observe,
    story_text,
    wait_until,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

N_STORIES = 300
SYNC_TIMEOUT_S = 15.0


# -- helpers ------------------------------------------------------------------------


def sid(n: int) -> str:
    """The id of the n-th story of the fixture checkout."""
    return f"{n + 1}_story_item"


def home_stage(n: int) -> str:
    return STAGES[n % 3]


def rename_story(path: Path, new_name: str) -> None:
    """Change the `name:` line of a story file (an edit of one field)."""
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"^name: .*$", f"name: {json.dumps(new_name)}", text,
                           count=1, flags=re.MULTILINE), encoding="utf-8")


def find(root: Path, story_id: str) -> Path:
    """The one file of a story in any stage."""
    found = [root / s / f"{story_id}.md" for s in STAGES if (root / s / f"{story_id}.md").exists()]
    assert len(found) == 1, found
    return found[0]


def created_at(daemon: DaemonProcess) -> dict[str, str]:
    return {i: r["created_at"] for i, r in daemon.rows().items()}


def log_mark(daemon: DaemonProcess) -> int:
    """How many log events exist now; events after it belong to the next operation."""
    return len(daemon.log_events())


def ids_logged(daemon: DaemonProcess, mark: int, event: str) -> set[str]:
    return {e["id"] for e in daemon.log_events()[mark:] if e.get("event") == event}


def assert_synced(repo: Stories, daemon: DaemonProcess, before: dict[str, str], mark: int,
                  *, deleted: set[str] = frozenset(),  # type: ignore[assignment]
                  created: set[str] = frozenset()) -> dict[str, dict[str, Any]]:  # type: ignore[assignment]
    """Wait for the rows to equal the folders, then check the whole contract of one git op.

    `before` is created_at per id before the operation; `deleted` and `created`
    are exactly the ids the operation removed or added. Every other story only
    moved, changed or stayed, so it keeps its created_at and is never logged
    as deleted or created.
    """
    wait_until(lambda: folder_matches_db(repo, daemon), SYNC_TIMEOUT_S,
               "rows equal to the folders")
    rows = daemon.rows()
    assert not deleted & set(rows), "deleted stories still have rows"
    assert created <= set(rows)
    kept = set(before) - deleted
    assert kept <= set(rows)
    lost = sorted(i for i in kept if rows[i]["created_at"] != before[i])
    assert not lost, f"created_at changed for stories that only moved or changed: {lost[:10]}"
    assert ids_logged(daemon, mark, "story.deleted") == deleted
    assert ids_logged(daemon, mark, "story.created") == created
    # Deletes are real: no trace of them in the other tables either.
    for story_id in deleted:
        assert not daemon.query("SELECT 1 FROM story_extras WHERE id = ?", (story_id,))
        assert not daemon.query("SELECT 1 FROM file_signatures WHERE story_id = ?", (story_id,))
    # Nothing under .git/ (or anywhere but directly in a stage folder) is tracked.
    paths = [p for (p,) in daemon.query("SELECT path FROM file_signatures")]
    assert all(p.split("/")[0] in STAGES and p.count("/") == 1 for p in paths)
    assert all(re.fullmatch(r"[0-9]+_[^/]*", i) for i in rows)
    assert len(paths) == len(rows)  # no leftover conflict or stale signature
    return rows


def doctor_clean(daemon: DaemonProcess) -> None:
    wait_until(lambda: daemon.cli("doctor").returncode == 0, 10, "doctor to report no problem")


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def repo(stories: Stories) -> Stories:
    """A git checkout (branch main) of 300 stories spread over the three stages."""
    git(stories.root, "init", "-q", "-b", "main")
    for stage in STAGES:  # git keeps no empty folder; teams keep a .gitkeep
        (stories.root / stage / ".gitkeep").write_text("")
    for n in range(N_STORIES):
        stories.write(home_stage(n), sid(n), name=f"Item {n}", retry_count=1 + n % 3,
                      body=f"Body of item {n}.\n")
    git(stories.root, "add", "-A")
    git(stories.root, "commit", "-qm", "stories")
    return stories


@pytest.fixture
def origin(repo: Stories, tmp_path: Path) -> Path:
    """A bare repository in tmp that the checkout pushes to and pulls from."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(repo.root, "remote", "add", "origin", str(bare))
    git(repo.root, "push", "-q", "-u", "origin", "main")
    return bare


def commit_all(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


# -- tests --------------------------------------------------------------------------


class TestCheckout:
    def test_checkout_branch_where_stories_moved_and_were_edited(
        self, repo: Stories, daemon: DaemonProcess
    ) -> None:
        """`git checkout` of a branch whose stories changed stage AND text: moves, not new stories.

        The branch moves 120 stories and edits each of them, edits 60 more in
        place, deletes 20 and creates 20. Checking it out and back keeps
        created_at for every story that exists on both sides.
        """
        root = repo.root
        git(root, "checkout", "-q", "-b", "work")
        moved = {sid(n) for n in range(120)}
        edited = {sid(n) for n in range(120, 180)}
        gone = {sid(n) for n in range(180, 200)}
        new = {f"{1000 + k}_story_branch" for k in range(20)}
        for n in range(120):
            target = STAGES[(n + 1) % 3]
            git(root, "mv", f"{home_stage(n)}/{sid(n)}.md", f"{target}/{sid(n)}.md")
            rename_story(root / target / f"{sid(n)}.md", f"Moved {n}")
        for n in range(120, 180):
            rename_story(root / home_stage(n) / f"{sid(n)}.md", f"Edited {n}")
        for n in range(180, 200):
            git(root, "rm", "-q", f"{home_stage(n)}/{sid(n)}.md")
        for k, story_id in enumerate(sorted(new)):
            repo.write(STAGES[k % 3], story_id, name=f"New {k}")
        commit_all(root, "move, edit, delete, create")
        git(root, "checkout", "-q", "main")

        daemon.start()
        before = created_at(daemon)
        assert len(before) == N_STORIES
        mark = log_mark(daemon)
        git(root, "checkout", "-q", "work")
        rows = assert_synced(repo, daemon, before, mark, deleted=gone, created=new)
        for n in range(120):
            row = rows[sid(n)]
            assert (row["stage"], row["name"]) == (STAGES[(n + 1) % 3], f"Moved {n}")
            assert row["retry_count"] == 0  # a stage change resets it
        assert all(rows[sid(n)]["name"] == f"Edited {n}" for n in range(120, 180))
        assert all(rows[sid(n)]["retry_count"] == 1 + n % 3 for n in range(120, 180))
        assert ids_logged(daemon, mark, "story.moved") == moved
        assert ids_logged(daemon, mark, "story.updated") >= edited

        before = created_at(daemon)
        mark = log_mark(daemon)
        git(root, "checkout", "-q", "main")
        rows = assert_synced(repo, daemon, before, mark, deleted=new, created=gone)
        assert all(rows[sid(n)]["stage"] == home_stage(n) for n in range(N_STORIES))
        doctor_clean(daemon)


class TestStash:
    def test_stash_and_pop_of_moves_deletes_and_new_files(
        self, repo: Stories, daemon: DaemonProcess
    ) -> None:
        """`git stash -u` and `git stash pop` of staged moves, edits, a delete and a new file.

        The stash puts every moved story back in its old stage and the pop moves
        it again: created_at is kept through both; only the new (untracked)
        file and the `git rm`-ed file come and go.
        """
        root = repo.root
        daemon.start()
        staged_moves = [n for n in range(60) if home_stage(n) != "4_merge"]
        for n in staged_moves:
            git(root, "mv", f"{home_stage(n)}/{sid(n)}.md", f"4_merge/{sid(n)}.md")
        local_edits = range(60, 100)
        for n in local_edits:
            rename_story(root / home_stage(n) / f"{sid(n)}.md", f"Local {n}")
        git(root, "rm", "-q", f"{home_stage(250)}/{sid(250)}.md")
        repo.write("2_current", "2000_story_untracked", name="Untracked")
        wait_until(lambda: folder_matches_db(repo, daemon), SYNC_TIMEOUT_S, "local changes")

        before = created_at(daemon)
        mark = log_mark(daemon)
        git(root, "stash", "push", "-q", "-u")
        rows = assert_synced(repo, daemon, before, mark, deleted={"2000_story_untracked"},
                             created={sid(250)})
        assert all(rows[sid(n)]["stage"] == home_stage(n) for n in staged_moves)
        assert all(rows[sid(n)]["name"] == f"Item {n}" for n in local_edits)

        before = created_at(daemon)
        mark = log_mark(daemon)
        git(root, "stash", "pop", "-q")
        rows = assert_synced(repo, daemon, before, mark, deleted={sid(250)},
                             created={"2000_story_untracked"})
        assert all(rows[sid(n)]["stage"] == "4_merge" for n in staged_moves)
        assert all(rows[sid(n)]["name"] == f"Local {n}" for n in local_edits)
        doctor_clean(daemon)


class TestDiscard:
    def test_checkout_dot_discards_local_edits(self, repo: Stories,
                                               daemon: DaemonProcess) -> None:
        """`git checkout -- .` rewrites 150 locally edited files: edits back, never deletes."""
        root = repo.root
        daemon.start()
        original = created_at(daemon)
        for n in range(0, N_STORIES, 2):
            rename_story(root / home_stage(n) / f"{sid(n)}.md", f"Scribble {n}")
        wait_until(lambda: folder_matches_db(repo, daemon), SYNC_TIMEOUT_S, "local edits")
        assert daemon.row(sid(0))["name"] == "Scribble 0"  # type: ignore[index]

        mark = log_mark(daemon)
        git(root, "checkout", "--", ".")
        rows = assert_synced(repo, daemon, original, mark)
        assert all(rows[sid(n)]["name"] == f"Item {n}" for n in range(N_STORIES))
        assert ids_logged(daemon, mark, "story.updated") == {sid(n) for n in range(0, 300, 2)}
        assert not git(root, "status", "--porcelain")
        doctor_clean(daemon)


class TestPullRebase:
    def test_pull_rebase_from_a_second_clone(self, repo: Stories, origin: Path,
                                             daemon: DaemonProcess, tmp_path: Path) -> None:
        """`git pull --rebase` of another clone's moves, edits, creates and deletes.

        The checkout has a local commit of its own, so the rebase first rewinds
        it (the local edits go back) and then replays it on top: those stories
        change twice and still keep created_at. After a restart nothing comes
        back and nothing is re-created.
        """
        other = tmp_path / "other"
        git(tmp_path, "clone", "-q", str(origin), str(other))
        moved_and_edited = range(0, 50)
        edited = range(50, 90)
        gone = {sid(n) for n in range(90, 110)}
        new = {f"{3000 + k}_story_remote" for k in range(20)}
        for n in moved_and_edited:
            target = "4_merge" if home_stage(n) != "4_merge" else "1_backlog"
            git(other, "mv", f"{home_stage(n)}/{sid(n)}.md", f"{target}/{sid(n)}.md")
            rename_story(other / target / f"{sid(n)}.md", f"Remote {n}")
        for n in edited:
            rename_story(other / home_stage(n) / f"{sid(n)}.md", f"Remote {n}")
        for n in range(90, 110):
            git(other, "rm", "-q", f"{home_stage(n)}/{sid(n)}.md")
        for k, story_id in enumerate(sorted(new)):
            (other / STAGES[k % 3] / f"{story_id}.md").write_text(story_text(name=f"R {k}"))
        commit_all(other, "remote work")
        git(other, "push", "-q", "origin", "main")

        daemon.start()
        for n in range(200, 210):  # a local commit on stories the remote did not touch
            rename_story(repo.root / home_stage(n) / f"{sid(n)}.md", f"Local {n}")
        commit_all(repo.root, "local work")
        wait_until(lambda: folder_matches_db(repo, daemon), SYNC_TIMEOUT_S, "local commit")

        before = created_at(daemon)
        mark = log_mark(daemon)
        git(repo.root, "pull", "-q", "--rebase", "origin", "main")
        rows = assert_synced(repo, daemon, before, mark, deleted=gone, created=new)
        assert "remote work" in git(repo.root, "log", "--format=%s", "-2")
        for n in moved_and_edited:
            assert rows[sid(n)]["name"] == f"Remote {n}"
            assert rows[sid(n)]["stage"] != home_stage(n)
        assert all(rows[sid(n)]["name"] == f"Remote {n}" for n in edited)
        assert all(rows[sid(n)]["name"] == f"Local {n}" for n in range(200, 210))

        rows_before_restart = daemon.rows()
        daemon.stop()
        mark = log_mark(daemon)
        daemon.start()
        assert daemon.rows() == rows_before_restart
        assert not ids_logged(daemon, mark, "story.created")
        doctor_clean(daemon)


class TestGitMv:
    def test_git_mv_of_many_files(self, repo: Stories, daemon: DaemonProcess) -> None:
        """Two `git mv` commands moving 200 stories are 200 moves: no delete, no create."""
        root = repo.root
        daemon.start()
        before = created_at(daemon)
        mark = log_mark(daemon)
        backlog = sorted(p.name for p in (root / "1_backlog").glob("*.md"))
        current = sorted(p.name for p in (root / "2_current").glob("*.md"))
        git(root, "mv", *(f"1_backlog/{name}" for name in backlog), "2_current/")
        git(root, "mv", *(f"2_current/{name}" for name in current), "4_merge/")
        rows = assert_synced(repo, daemon, before, mark)
        assert {i for i, r in rows.items() if r["stage"] == "2_current"} == {
            name[:-3] for name in backlog}
        assert sum(r["stage"] == "4_merge" for r in rows.values()) == 200
        assert ids_logged(daemon, mark, "story.moved") == {
            name[:-3] for name in backlog + current}
        assert all(rows[name[:-3]]["retry_count"] == 0 for name in backlog + current)
        assert not list((root / "1_backlog").glob("*.md"))
        doctor_clean(daemon)


class TestHistoryRewrites:
    def _three_commits(self, repo: Stories) -> tuple[set[str], set[str], set[str], set[str]]:
        """Commits on main: 50 moves, then 50 edits + 10 deletes, then 20 creates."""
        root = repo.root
        moved = {sid(n) for n in range(50)}
        for n in range(50):
            git(root, "mv", f"{home_stage(n)}/{sid(n)}.md",
                f"{STAGES[(n + 2) % 3]}/{sid(n)}.md")
        commit_all(root, "moves")
        edited = {sid(n) for n in range(50, 100)}
        for n in range(50, 100):
            rename_story(root / home_stage(n) / f"{sid(n)}.md", f"Changed {n}")
        gone = {sid(n) for n in range(100, 110)}
        for n in range(100, 110):
            git(root, "rm", "-q", f"{home_stage(n)}/{sid(n)}.md")
        commit_all(root, "edits and deletes")
        new = {f"{4000 + k}_story_later" for k in range(20)}
        for k, story_id in enumerate(sorted(new)):
            repo.write(STAGES[k % 3], story_id, name=f"Later {k}")
        commit_all(root, "creates")
        return moved, edited, gone, new

    def test_reset_hard_back_and_forth_across_commits(self, repo: Stories,
                                                      daemon: DaemonProcess) -> None:
        """`git reset --hard HEAD~3` then `git reset --hard ORIG_HEAD` across three commits."""
        moved, edited, gone, new = self._three_commits(repo)
        daemon.start()
        before = created_at(daemon)
        mark = log_mark(daemon)
        git(repo.root, "reset", "-q", "--hard", "HEAD~3")
        rows = assert_synced(repo, daemon, before, mark, deleted=new, created=gone)
        assert all(rows[i]["name"].startswith("Item ") for i in moved | edited)
        assert ids_logged(daemon, mark, "story.moved") == moved

        before = created_at(daemon)
        mark = log_mark(daemon)
        git(repo.root, "reset", "-q", "--hard", "ORIG_HEAD")
        rows = assert_synced(repo, daemon, before, mark, deleted=gone, created=new)
        assert all(rows[i]["name"].startswith("Changed ") for i in edited)
        assert ids_logged(daemon, mark, "story.moved") == moved
        doctor_clean(daemon)

    def test_rebase_of_a_branch_onto_moved_main(self, repo: Stories,
                                                daemon: DaemonProcess) -> None:
        """`git rebase main` from a branch with edits: main's moves, creates and deletes
        arrive while the branch's edits are rewound and replayed."""
        root = repo.root
        git(root, "checkout", "-q", "-b", "feature")
        feature_edits = {sid(n) for n in range(150, 200)}
        for n in range(150, 200):
            rename_story(root / home_stage(n) / f"{sid(n)}.md", f"Feature {n}")
            if n % 10 == 9:  # five commits of ten edits each
                commit_all(root, f"edits up to {n}")
        git(root, "checkout", "-q", "main")
        moved, edited, gone, new = self._three_commits(repo)
        git(root, "checkout", "-q", "feature")

        daemon.start()
        before = created_at(daemon)
        mark = log_mark(daemon)
        git(root, "rebase", "-q", "main")
        rows = assert_synced(repo, daemon, before, mark, deleted=gone, created=new)
        assert len(git(root, "log", "--format=%s", "main..HEAD").split()) >= 5
        assert all(rows[i]["name"].startswith("Feature ") for i in feature_edits)
        assert all(rows[i]["name"].startswith("Changed ") for i in edited)
        assert all(rows[sid(n)]["stage"] == STAGES[(n + 2) % 3] for n in range(50))
        assert ids_logged(daemon, mark, "story.moved") == moved
        doctor_clean(daemon)


class TestIndexLock:
    def test_delete_waits_while_index_lock_is_held(self, repo: Stories,
                                                   daemon: DaemonProcess) -> None:
        """With `.git/index.lock` present a vanished story keeps its row; it goes once the
        lock is removed. Creates and edits are not held back meanwhile."""
        root = repo.root
        daemon.start()
        lock = root / ".git" / "index.lock"
        lock.write_text("")
        mark = log_mark(daemon)
        find(root, sid(7)).unlink()
        repo.write("1_backlog", "5000_story_during_lock", name="During lock")
        rename_story(find(root, sid(8)), "Edited during lock")
        daemon.wait_row("5000_story_during_lock")
        daemon.wait_row(sid(8), lambda r: r["name"] == "Edited during lock")

        # A deliberate observation window, by polling: the row must stay for ~1 s.
        still_there = observe(lambda: daemon.row(sid(7)) is not None, seconds=1.2)
        assert still_there, "the row went while .git/index.lock was held"
        assert sid(7) not in ids_logged(daemon, mark, "story.deleted")

        lock.unlink()
        daemon.wait_gone(sid(7), timeout=5)
        assert ids_logged(daemon, mark, "story.deleted") == {sid(7)}
        wait_until(lambda: folder_matches_db(repo, daemon), SYNC_TIMEOUT_S, "rows equal")


