"""Unit tests of `pipelined.story`: bytes of one file -> a parsed story.

Pure inputs only: each test feeds the bytes of one file and checks the fields,
the extra keys, the content and the recorded errors.
"""

from __future__ import annotations

import json

import pytest

from pipelined.story import FIELDS, ParsedStory, parse_story, story_number

LIMIT = 1024 * 1024
NULL_FIELDS = dict.fromkeys(FIELDS)


def parse(text: str, max_bytes: int = LIMIT) -> ParsedStory:
    return parse_story(text.encode("utf-8"), max_bytes)


class TestParseStory:
    def test_typed_fields(self) -> None:
        """Every known field comes back with its contract type."""
        raw = (
            "---\n"
            "name: Login page\n"
            "agent: coder-1\n"
            "retry_count: 2\n"
            "blocked: true\n"
            "depends_on: [3, 7_story_auth]\n"
            "---\n"
            "Body.\n"
        )
        parsed = parse(raw)

        assert parsed.fields == {
            "name": "Login page",
            "agent": "coder-1",
            "retry_count": 2,
            "blocked": True,
            "depends_on": '[3, "7_story_auth"]',
        }
        assert parsed.errors == ()
        assert parsed.extra == {}

    def test_content_is_the_whole_text_exactly(self) -> None:
        """Content is the file text as on disk: front matter, body and trailing whitespace."""
        raw = "---\nname: x\n---\n\nBody line\n\n"

        assert parse(raw).content == raw

    def test_depends_on_is_json_array_text(self) -> None:
        """depends_on is stored as JSON array text that loads back to the same list."""
        parsed = parse("---\ndepends_on:\n  - 12\n  - 40_bug_crash\n---\n")

        assert json.loads(parsed.fields["depends_on"]) == [12, "40_bug_crash"]

    def test_depends_on_single_value_becomes_one_element_array(self) -> None:
        """A single number for depends_on is read as a list of one."""
        assert parse("---\ndepends_on: 12\n---\n").fields["depends_on"] == "[12]"

    def test_depends_on_empty_list(self) -> None:
        """An empty depends_on list is the JSON text `[]`, not null."""
        assert parse("---\ndepends_on: []\n---\n").fields["depends_on"] == "[]"

    def test_numeric_name_becomes_text(self) -> None:
        """A name YAML reads as a number is kept as its text."""
        assert parse("---\nname: 42\n---\n").fields["name"] == "42"

    def test_retry_count_zero_is_kept(self) -> None:
        """retry_count 0 is a valid value, not treated as missing."""
        parsed = parse("---\nretry_count: 0\n---\n")

        assert parsed.fields["retry_count"] == 0
        assert parsed.errors == ()

    def test_explicit_null_fields_are_null_without_error(self) -> None:
        """A field written as null is null and is no error."""
        parsed = parse("---\nname: x\nagent: null\nblocked: ~\n---\n")

        assert parsed.fields["agent"] is None
        assert parsed.fields["blocked"] is None
        assert parsed.errors == ()

    def test_missing_fields_are_null(self) -> None:
        """Fields the front matter does not mention are null."""
        parsed = parse("---\nname: only a name\n---\n")

        assert parsed.fields == {**NULL_FIELDS, "name": "only a name"}

    def test_extra_keys_are_kept(self) -> None:
        """Keys that are not story fields are kept, with nested values."""
        parsed = parse(
            "---\nname: x\npriority: high\npoints: 3\nratio: 0.5\n"
            "labels: [ui, auth]\nowner: {team: web, oncall: false}\n---\n"
        )

        assert parsed.extra == {
            "priority": "high",
            "points": 3,
            "ratio": 0.5,
            "labels": ["ui", "auth"],
            "owner": {"team": "web", "oncall": False},
        }
        assert parsed.fields["name"] == "x"

    def test_extra_dates_become_iso_text(self) -> None:
        """YAML dates and timestamps in extra keys become ISO text, also when nested."""
        parsed = parse(
            "---\ndue: 2024-05-01\nseen_at: 2024-05-01T10:30:00Z\n"
            "history: [{date: 2023-12-31}]\n---\n"
        )

        assert parsed.extra == {
            "due": "2024-05-01",
            "seen_at": "2024-05-01T10:30:00+00:00",
            "history": [{"date": "2023-12-31"}],
        }
        json.dumps(parsed.extra)  # must not raise

    def test_non_text_keys_become_text(self) -> None:
        """A key YAML reads as a number is kept under its text."""
        assert parse("---\n7: seven\n---\n").extra == {"7": "seven"}

    def test_extra_nan_is_json_able(self) -> None:
        """Every extra value can be written as strict JSON, even YAML's .nan and .inf."""
        parsed = parse("---\nscore: .nan\nlimit: .inf\n---\n")

        json.dumps(parsed.extra, allow_nan=False)

    def test_wrong_typed_retry_count_is_null_and_others_kept(self) -> None:
        """`retry_count: lots` is null with its error; the other fields are kept."""
        parsed = parse("---\nname: Login\nagent: bob\nretry_count: lots\nblocked: false\n---\n")

        assert parsed.fields == {
            "name": "Login",
            "agent": "bob",
            "retry_count": None,
            "blocked": False,
            "depends_on": None,
        }
        assert len(parsed.errors) == 1
        assert parsed.errors[0].startswith("retry_count:")
        assert "'lots'" in parsed.errors[0]

    @pytest.mark.parametrize(
        ("line", "field"),
        [
            ("retry_count: -1", "retry_count"),
            ("retry_count: 1.5", "retry_count"),
            ("retry_count: true", "retry_count"),
            ("blocked: maybe", "blocked"),
            ("blocked: 1", "blocked"),
            ("name: [a, b]", "name"),
            ("agent: {x: 1}", "agent"),
            ("name: yes", "name"),
            ("depends_on: [1, {x: 2}]", "depends_on"),
            ("depends_on: [-3]", "depends_on"),
            ("depends_on: [true]", "depends_on"),
        ],
    )
    def test_each_wrong_type_is_one_error(self, line: str, field: str) -> None:
        """A wrong-typed field is null with one error that names it; a good field survives."""
        parsed = parse(f"---\nagent: keeper\n{line}\n---\n")

        assert parsed.fields[field] is None
        assert [e.split(":")[0] for e in parsed.errors] == [field]
        if field != "agent":
            assert parsed.fields["agent"] == "keeper"

    def test_several_wrong_fields_are_each_recorded(self) -> None:
        """Two wrong fields give two errors, in file order."""
        parsed = parse("---\nretry_count: lots\nblocked: maybe\nname: ok\n---\n")

        assert [e.split(":")[0] for e in parsed.errors] == ["retry_count", "blocked"]
        assert parsed.fields["name"] == "ok"

    def test_unparsable_yaml(self) -> None:
        """Front matter that is not YAML gives null fields, the text, and one error."""
        raw = "---\nname: [unclosed\nagent: bob\n---\nBody\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.extra == {}
        assert parsed.content == raw
        assert len(parsed.errors) == 1
        assert parsed.errors[0].startswith("front matter does not parse")

    def test_unsafe_yaml_tag_is_an_error(self) -> None:
        """A python object tag is refused (safe loading), recorded as a parse error."""
        parsed = parse("---\nname: !!python/object/apply:os.system ['true']\n---\n")

        assert parsed.fields == NULL_FIELDS
        assert parsed.errors[0].startswith("front matter does not parse")

    @pytest.mark.parametrize("front", ["- a\n- b", "just a sentence", "42"])
    def test_non_mapping_front_matter(self, front: str) -> None:
        """Front matter that is a list or a scalar is an error, not an empty story."""
        raw = f"---\n{front}\n---\nBody\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.content == raw
        assert parsed.errors == ("front matter does not parse: front matter is not a mapping",)

    def test_no_front_matter(self) -> None:
        """A file without front matter is a story with null fields and no error."""
        raw = "# Just a heading\n\nSome text.\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.extra == {}
        assert parsed.content == raw
        assert parsed.errors == ()

    def test_empty_front_matter(self) -> None:
        """`---` directly followed by `---` is an empty front matter: null fields, no error."""
        parsed = parse("---\n---\nBody\n")

        assert parsed.fields == NULL_FIELDS
        assert parsed.errors == ()

    def test_crlf_line_endings(self) -> None:
        """Front matter with Windows line endings parses like with Unix ones."""
        raw = "---\r\nname: x\r\nretry_count: 2\r\n---\r\nBody\r\n"
        parsed = parse(raw)

        assert parsed.fields["name"] == "x"
        assert parsed.fields["retry_count"] == 2
        assert parsed.content == raw

    def test_utf8_bom_front_matter(self) -> None:
        """A file saved with a UTF-8 BOM still has its front matter read (or an error says why)."""
        parsed = parse_story(b"\xef\xbb\xbf---\nname: x\n---\nBody\n", LIMIT)

        assert parsed.fields["name"] == "x" or parsed.errors != ()

    def test_horizontal_rules_in_body_are_not_front_matter(self) -> None:
        """A file with no front matter but two `---` rules in its body has no fields, no error."""
        parsed = parse("# Title\n\nIntro.\n\n---\n\nname: hijack\n\n---\n\nEnd.\n")

        assert parsed.fields == NULL_FIELDS
        assert parsed.errors == ()

    @pytest.mark.parametrize("raw", [b"", b"\n", b"  \n\t\n"])
    def test_empty_file(self, raw: bytes) -> None:
        """An empty (or whitespace-only) file is a story with null fields and an error."""
        parsed = parse_story(raw, LIMIT)

        assert parsed.fields == NULL_FIELDS
        assert parsed.content == raw.decode()
        assert parsed.errors == ("file is empty",)

    def test_non_utf8_is_decoded_with_replacement(self) -> None:
        """Non-UTF-8 bytes: content decoded with U+FFFD, fields null, error names the byte."""
        raw = b"---\nname: caf\xe9\n---\nBody\n"
        parsed = parse_story(raw, LIMIT)

        assert parsed.content == "---\nname: caf\ufffd\n---\nBody\n"
        assert parsed.fields == NULL_FIELDS
        assert parsed.errors == ("not UTF-8 (byte 13)",)

    def test_oversized_file(self) -> None:
        """A file over the limit is a story without content, with null fields and an error."""
        raw = b"---\nname: big\n---\n" + b"x" * 100
        parsed = parse_story(raw, max_bytes=50)

        assert parsed.content is None
        assert parsed.fields == NULL_FIELDS
        assert len(parsed.errors) == 1
        assert str(len(raw)) in parsed.errors[0]
        assert "50" in parsed.errors[0]

    def test_file_exactly_at_limit_is_parsed(self) -> None:
        """The limit is inclusive: a file of exactly max_bytes is parsed normally."""
        raw = b"---\nname: edge\n---\n"
        parsed = parse_story(raw, max_bytes=len(raw))

        assert parsed.fields["name"] == "edge"
        assert parsed.content == raw.decode()
        assert parsed.errors == ()

    def test_never_raises_on_garbage(self) -> None:
        """Random binary input is still a ParsedStory, never an exception."""
        raw = bytes(range(256)) * 4
        parsed = parse_story(raw, LIMIT)

        assert isinstance(parsed, ParsedStory)
        assert parsed.fields == NULL_FIELDS
        assert parsed.errors[0].startswith("not UTF-8")


class TestStoryNumber:
    @pytest.mark.parametrize(
        ("story_id", "number"),
        [
            ("10_story_login", 10),
            ("9870_bug_crash", 9870),
            ("007_bond", 7),
            ("1_", 1),
        ],
    )
    def test_number_of_an_id(self, story_id: str, number: int) -> None:
        """The number is the leading digits before the first underscore."""
        assert story_number(story_id) == number

    @pytest.mark.parametrize("story_id", ["story_10", "10", "x10_y", "", "_10_x", "10-x"])
    def test_id_without_number(self, story_id: str) -> None:
        """An id that does not start with `<digits>_` has no number."""
        assert story_number(story_id) is None


class TestBrokenFlag:
    def test_unclosed_front_matter_is_an_error(self) -> None:
        """An opening --- with no closing one (a half-written file) is a recorded error."""
        parsed = parse_story(b"---\nname: x\nretry_c", 1 << 20)
        assert parsed.errors == ("front matter is not closed by a --- line",)
        assert parsed.broken is True
        assert parsed.fields["name"] is None

    def test_field_error_is_not_broken(self) -> None:
        """A single bad field leaves the file readable: not broken, other fields kept."""
        parsed = parse_story(b"---\nname: x\nretry_count: lots\n---\n", 1 << 20)
        assert parsed.broken is False
        assert parsed.fields["name"] == "x"

    def test_no_front_matter_is_broken_without_error(self) -> None:
        """A plain markdown file gives no fields and no error, but counts as broken."""
        parsed = parse_story(b"# Just a title\n", 1 << 20)
        assert parsed.broken is True
        assert parsed.errors == ()
