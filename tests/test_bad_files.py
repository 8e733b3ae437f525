"""Bad story files are tracked with their error; they never stop the daemon."""

from __future__ import annotations

import json

from conftest import DaemonProcess, Stories, wait_until


class TestBadFiles:
    def test_bad_files_are_stories_with_errors(self, stories: Stories,
                                               daemon: DaemonProcess) -> None:
        """Unparsable, empty, non-UTF-8 and oversized files are tracked with null fields."""
        daemon.start("--max-file-bytes", "2000")
        stories.write("1_backlog", "1_bad_yaml", "---\nname: [unclosed\n---\nbody\n")
        stories.write("1_backlog", "2_empty", "")
        stories.path("1_backlog", "3_latin1").write_bytes(b"---\nname: caf\xe9\n---\n")
        stories.write("1_backlog", "4_huge", "---\nname: huge\n---\n" + "x" * 5000)
        stories.write("1_backlog", "5_wrong_type", name="Kept", retry_count="lots")  # type: ignore[arg-type]
        stories.write("1_backlog", "6_good", name="Good")
        daemon.wait_row("6_good")
        for story_id in ("1_bad_yaml", "2_empty", "3_latin1", "4_huge", "5_wrong_type"):
            daemon.wait_row(story_id)
        rows = daemon.rows()
        assert rows["1_bad_yaml"]["name"] is None
        ((code, message),) = daemon.errors("1_bad_yaml")
        assert code == "front_matter_syntax" and message.startswith("front matter does not parse")
        assert daemon.errors("2_empty") == [("empty", "file is empty")]
        assert rows["3_latin1"]["content"] == "---\nname: caf\ufffd\n---\n"
        assert daemon.errors("3_latin1") == [("not_utf8", "not UTF-8 (byte 13)")]
        assert rows["4_huge"]["content"] is None and rows["4_huge"]["name"] is None
        ((code, message),) = daemon.errors("4_huge")
        assert code == "too_large" and "over the 2000-byte limit" in message
        assert rows["5_wrong_type"]["name"] == "Kept"
        assert rows["5_wrong_type"]["retry_count"] is None
        assert daemon.errors("5_wrong_type") == [("bad_value",
            "retry_count: expected an integer from 0 to 9007199254740991, got 'lots'")]
        doctor = json.loads(daemon.cli("doctor", "--json").stdout)
        assert {e["id"] for e in doctor["parse_errors"]} == {
            "1_bad_yaml", "2_empty", "3_latin1", "4_huge", "5_wrong_type"}

    def test_fixing_a_bad_file_clears_its_error(self, stories: Stories,
                                                daemon: DaemonProcess) -> None:
        """Once the front matter is fixed, the fields come back and the error goes."""
        stories.write("2_current", "7_story_fix", "---\nname: [oops\n---\n")
        daemon.start()
        daemon.wait_row("7_story_fix")
        assert [code for code, _ in daemon.errors("7_story_fix")] == ["front_matter_syntax"]
        stories.write("2_current", "7_story_fix", name="Fixed")
        daemon.wait_row("7_story_fix", lambda r: r["name"] == "Fixed")
        assert daemon.errors("7_story_fix") == []

    def test_an_oversized_file_that_changes_says_its_new_size(
            self, stories: Stories, daemon: DaemonProcess) -> None:
        """The error of a file over the limit follows the file: its content and fields
        stay null whatever its size, so only the error tells the edits apart (the row
        kept the size of the first read)."""
        daemon.start("--max-file-bytes", "2000")
        path = stories.write("1_backlog", "11_story_big", "x" * 3000)
        daemon.wait_row("11_story_big")
        assert daemon.errors("11_story_big") == [
            ("too_large", "file is 3000 bytes, over the 2000-byte limit")]
        path.write_text("x" * 5000)
        wait_until(lambda: daemon.errors("11_story_big") == [
            ("too_large", "file is 5000 bytes, over the 2000-byte limit")],
            what="the new size in the error")
        assert daemon.stop() == 0

    def test_symlink_out_of_root_is_not_followed(self, stories: Stories,
                                                 daemon: DaemonProcess) -> None:
        """A story symlink pointing outside the root is ignored; one inside is followed."""
        outside = stories.root.parent / "outside.md"
        outside.write_text("---\nname: secret\n---\n")
        (stories.root / "1_backlog" / "8_story_link.md").symlink_to(outside)
        inside = stories.write("4_merge", "9_story_real", name="real")
        (stories.root / "2_current" / "10_story_alias.md").symlink_to(inside)
        daemon.start()
        rows = daemon.rows()
        assert "8_story_link" not in rows
        assert rows["10_story_alias"]["name"] == "real"
