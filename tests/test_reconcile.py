"""The Reconciler in-process, on real files and a real pycrdt document."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import STAGES, Stories

from pipelined import sync
from pipelined.content import ContentMap
from pipelined.state import PipelineState
from pipelined.sync import Reconciler


class FailingState(PipelineState):
    """A real document whose next `apply` fails once (fault injection, not a mock)."""

    fail_next = False

    def apply(self, puts: Mapping[str, Mapping[str, Any]],
              removes: Iterable[str]) -> bytes | None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure")
        return super().apply(puts, removes)


def make(stories: Stories) -> tuple[Reconciler, FailingState, ContentMap]:
    state = FailingState(client_id=3)
    content = ContentMap()
    return Reconciler(stories.root, STAGES, state, content, {}, 1 << 20), state, content


class TestFailedReconcile:
    def test_a_failed_reconcile_leaves_nothing_behind(self, tmp_path: Path) -> None:
        """After a failure the next reconcile still sees the edit: the content map and
        the known signatures were put back, so state and rows are not left stale."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_a", name="old")
        reconciler, state, content = make(stories)
        reconciler.reconcile({"1_a"}, confirm_absent=True)
        assert state.get("1_a")["name"] == "old"  # type: ignore[index]

        stories.write("1_backlog", "1_a", name="new", body="changed\n")
        state.fail_next = True
        with pytest.raises(RuntimeError, match="injected"):
            reconciler.reconcile({"1_a"}, confirm_absent=True)
        assert "name: \"old\"" in (content.texts(["1_a"]).get("1_a") or "")

        result = reconciler.reconcile({"1_a"}, confirm_absent=True)
        assert state.get("1_a")["name"] == "new"  # type: ignore[index]
        assert [row.fields["name"] for row in result.batch.upserts] == ["new"]

    def test_a_failed_create_is_created_next_time(self, tmp_path: Path) -> None:
        """A create whose reconcile failed is created on the next try, not skipped."""
        stories = Stories(tmp_path / "root")
        stories.write("2_current", "7_b", name="b")
        reconciler, state, content = make(stories)
        state.fail_next = True
        with pytest.raises(RuntimeError):
            reconciler.reconcile({"7_b"}, confirm_absent=True)
        assert content.texts(["7_b"]) == {} and reconciler.tracked == {}
        assert reconciler.high_water == 0
        result = reconciler.reconcile({"7_b"}, confirm_absent=True)
        assert result.created == 1 and reconciler.high_water == 7


def memory(reconciler: Reconciler) -> dict[str, Any]:
    """Everything the reconciler keeps between reconciles (every attribute, the content
    map's texts), deep-copied; the pycrdt document is compared through its contents."""
    import copy

    kept: dict[str, Any] = {}
    for name, value in vars(reconciler).items():
        if name in ("state", "_story_log", "_dirs"):
            continue
        kept[name] = copy.deepcopy(dict(value._pending) if name == "content" else value)
    kept["state"] = reconciler.state.to_dict()
    return kept


class TestFailedReconcileRestoresEverything:
    def test_every_attribute_is_put_back(self, tmp_path: Path) -> None:
        """After a reconcile that fails at its end, every attribute of the reconciler
        equals what it was before, whatever the burst did: a create, an edit, a move, a
        delete, a conflict, a symlinked story, a broken file, a higher number. A per-story
        field added later and forgotten by the restore makes this test fail."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "1_a", name="a")
        stories.write("1_backlog", "2_b", name="b", retry_count=2)
        stories.write("2_current", "3_c", name="c")
        stories.write("4_merge", "4_d", name="d")
        stories.write("1_backlog", "5_e", name="e")
        reconciler, state, _content = make(stories)
        reconciler.reconcile({"1_a", "2_b", "3_c", "4_d", "5_e"}, confirm_absent=True)
        stories.write("1_backlog", "5_e", text="---\nname: [unclosed\n---\n")  # broken
        reconciler.reconcile({"5_e"}, confirm_absent=True)
        before = memory(reconciler)

        stories.write("1_backlog", "1_a", name="a edited", body="new\n")  # edit
        stories.move("2_b", "1_backlog", "2_current")  # move (resets retry_count)
        stories.path("2_current", "3_c").unlink()  # delete
        stories.write("2_current", "4_d", name="d copy")  # conflict with 4_merge/4_d
        target = stories.root / "notes.md"
        target.write_text("---\nname: linked\n---\n")
        stories.path("1_backlog", "60_f").symlink_to(target)  # symlinked create
        stories.write("1_backlog", "5_e", name="e fixed")  # broken file repaired
        stories.write("4_merge", "900_g", name="g")  # a new high-water mark
        state.fail_next = True
        with pytest.raises(RuntimeError, match="injected"):
            reconciler.reconcile({"1_a", "2_b", "3_c", "4_d", "5_e", "60_f", "900_g"},
                                 confirm_absent=True)
        assert memory(reconciler) == before


class TestStageFolderSwappedOutOfTheRoot:
    def test_a_swap_during_a_pass_deletes_nothing(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A stage folder swapped for a symlink out of the root after a pass looked the
        folders up (so the stat still finds the file, through the link) is refused when
        the file is opened: that makes the story unreadable, kept, not vanished (a
        catch-up, which confirms absence at once, deleted it)."""
        stories = Stories(tmp_path / "root")
        stories.write("2_current", "20_kept", name="kept")
        reconciler, state, _content = make(stories)
        reconciler.reconcile({"20_kept"}, confirm_absent=True)
        folder, elsewhere = stories.root / "2_current", tmp_path / "elsewhere"
        folder.rename(elsewhere)
        folder.symlink_to(elsewhere)
        stories.write("2_current", "20_kept", name="edited out there")  # a new signature
        # The pass's lookup of refused folders, as if it ran just before the swap.
        monkeypatch.setattr(sync, "stages_out_of_root", lambda _root, _stages: frozenset())
        result = reconciler.reconcile({"20_kept"}, confirm_absent=True)
        assert result.batch.deletes == [] and result.deleted == 0
        assert state.get("20_kept") is not None
        assert [row.errors[0].code for row in result.batch.upserts] == ["unreadable"]
        assert "symlink out of the root" in result.batch.upserts[0].errors[0].message


class TestFilesWithoutContent:
    def test_too_large_and_unreadable_each_write_their_error_once(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A file with no content (too large, unreadable) is told apart only by its
        error: a change between the two writes the row with the new error, and an
        unreadable file read again (every pass does) writes nothing more."""
        stories = Stories(tmp_path / "root")
        stories.write("1_backlog", "30_big", text="x" * 300)
        reconciler = Reconciler(stories.root, STAGES, PipelineState(client_id=5), ContentMap(),
                                {}, 100)

        def errors() -> list[list[str]]:
            result = reconciler.reconcile({"30_big"}, confirm_absent=True)
            return [[error.code for error in row.errors] for row in result.batch.upserts]

        assert errors() == [["too_large"]]
        stories.write("1_backlog", "30_big", text="x" * 400)  # a new version...
        real_read = sync._read_fd

        def denied(fd: int, limit: int) -> bytes:  # ...that cannot be read (fault injection)
            os.close(fd)
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(sync, "_read_fd", denied)
        assert errors() == [["unreadable"]]
        assert errors() == []  # read again, unreadable again: nothing to write
        monkeypatch.setattr(sync, "_read_fd", real_read)
        assert errors() == [["too_large"]]
