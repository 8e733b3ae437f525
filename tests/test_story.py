"""Unit tests of `pipelined.story`: bytes of one file -> a parsed story.

Pure inputs only: each test feeds the bytes of one file and checks the fields,
the extra keys, the content and the recorded errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelined import story
from pipelined.schema import ERROR_CODES
from pipelined.story import FIELDS, ParsedStory, parse_story, story_number

LIMIT = 1024 * 1024
NULL_FIELDS = dict.fromkeys(FIELDS)


def parse(text: str, max_bytes: int = LIMIT) -> ParsedStory:
    return parse_story(text.encode("utf-8"), max_bytes)


def messages(parsed: ParsedStory) -> tuple[str, ...]:
    return tuple(e.message for e in parsed.errors)


class TestErrorCodes:
    """Each kind of problem has its stable code (schema.ERROR_CODES); scripts and
    agents match the code, never the message."""

    @pytest.mark.parametrize(("raw", "code"), [
        (b"", "empty"),
        (b"---\nname: x\n", "front_matter_unclosed"),
        (b"---\nname: [unclosed\n---\n", "front_matter_syntax"),
        (b"---\n- a list\n---\n", "front_matter_syntax"),
        (b"---\nname: \xe9t\xe9\n---\n", "not_utf8"),
        (b"x" * (LIMIT + 1), "too_large"),
        (b"---\nretry_count: lots\n---\n", "bad_value"),
        (b"---\nagent: a\nagent: b\n---\n", "duplicate_key"),
        (b"---\na: &a [*a]\n---\n", "front_matter_too_large"),
    ])
    def test_code(self, raw: bytes, code: str) -> None:
        parsed = parse_story(raw, LIMIT)
        assert [e.code for e in parsed.errors][:1] == [code]
        assert code in ERROR_CODES and parsed.errors[0].message

    def test_every_code_is_documented(self) -> None:
        """docs/design.md lists every code with its meaning."""
        design = (Path(__file__).parent.parent / "docs" / "design.md").read_text()
        assert [c for c in ERROR_CODES if f"`{c}`" not in design] == []


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
        assert messages(parsed) == ()
        assert parsed.extra == {}

    def test_content_is_the_whole_text_exactly(self) -> None:
        """Content is the file text as on disk: front matter, body and trailing whitespace."""
        raw = "---\nname: x\n---\n\nBody line\n\n"

        assert parse(raw).content == raw

    def test_depends_on_is_json_array_text(self) -> None:
        """depends_on is stored as JSON array text that loads back to the same list."""
        parsed = parse("---\ndepends_on:\n  - 12\n  - 40_bug_crash\n---\n")

        assert json.loads(parsed.fields["depends_on"]) == [12, "40_bug_crash"]

    def test_depends_on_empty_list(self) -> None:
        """An empty depends_on list is the JSON text `[]`, not null."""
        assert parse("---\ndepends_on: []\n---\n").fields["depends_on"] == "[]"

    def test_retry_count_zero_is_kept(self) -> None:
        """retry_count 0 is a valid value, not treated as missing."""
        parsed = parse("---\nretry_count: 0\n---\n")

        assert parsed.fields["retry_count"] == 0
        assert messages(parsed) == ()

    def test_explicit_null_fields_are_null_without_error(self) -> None:
        """A field written as null is null and is no error."""
        parsed = parse("---\nname: x\nagent: null\nblocked: ~\n---\n")

        assert parsed.fields["agent"] is None
        assert parsed.fields["blocked"] is None
        assert messages(parsed) == ()

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
        assert len(messages(parsed)) == 1
        assert messages(parsed)[0].startswith("retry_count:")
        assert "'lots'" in messages(parsed)[0]

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
        keeper = "name" if field == "agent" else "agent"  # not written twice: no duplicate
        parsed = parse(f"---\n{keeper}: keeper\n{line}\n---\n")

        assert parsed.fields[field] is None
        assert [e.split(":")[0] for e in messages(parsed)] == [field]
        assert parsed.fields[keeper] == "keeper"

    def test_several_wrong_fields_are_each_recorded(self) -> None:
        """Two wrong fields give two errors, in file order."""
        parsed = parse("---\nretry_count: lots\nblocked: maybe\nname: ok\n---\n")

        assert [e.split(":")[0] for e in messages(parsed)] == ["retry_count", "blocked"]
        assert parsed.fields["name"] == "ok"

    def test_unparsable_yaml(self) -> None:
        """Front matter that is not YAML gives null fields, the text, and one error."""
        raw = "---\nname: [unclosed\nagent: bob\n---\nBody\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.extra == {}
        assert parsed.content == raw
        assert messages(parsed) == (
            "front matter does not parse at line 3, column 6: did not find expected ',' or "
            "']' (while parsing a flow sequence at line 2, column 7)",)

    @pytest.mark.parametrize(("raw", "where"), [
        ("---\nname: a\n  b: c\n---\n", "at line 3, column 4"),
        ("\ufeff---\nname: \"open\n---\n", "at line 3, column 1"),
        ("---\nname: x\n\tagent: y\n---\n", "at line 3, column 1")])
    def test_a_yaml_error_names_the_line_not_a_unicode_string(self, raw: str,
                                                              where: str) -> None:
        """PyYAML says `in "<unicode string>", line 3`; ours says the file's line."""
        (message,) = messages(parse(raw))
        assert message.startswith(f"front matter does not parse {where}: "), message
        assert "<unicode string>" not in message and "\n" not in message

    def test_unsafe_yaml_tag_is_an_error(self) -> None:
        """A python object tag is refused (safe loading), recorded as a parse error."""
        parsed = parse("---\nname: !!python/object/apply:os.system ['true']\n---\n")

        assert parsed.fields == NULL_FIELDS
        assert messages(parsed)[0].startswith("front matter does not parse")

    @pytest.mark.parametrize("front", ["- a\n- b", "just a sentence", "42"])
    def test_non_mapping_front_matter(self, front: str) -> None:
        """Front matter that is a list or a scalar is an error, not an empty story."""
        raw = f"---\n{front}\n---\nBody\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.content == raw
        assert messages(parsed) == ("front matter is not a mapping",)

    def test_no_front_matter(self) -> None:
        """A file without front matter is a story with null fields and no error."""
        raw = "# Just a heading\n\nSome text.\n"
        parsed = parse(raw)

        assert parsed.fields == NULL_FIELDS
        assert parsed.extra == {}
        assert parsed.content == raw
        assert messages(parsed) == ()

    def test_empty_front_matter(self) -> None:
        """`---` directly followed by `---` is an empty front matter: null fields, no error."""
        parsed = parse("---\n---\nBody\n")

        assert parsed.fields == NULL_FIELDS
        assert messages(parsed) == ()

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

        assert parsed.fields["name"] == "x" or messages(parsed) != ()

    def test_horizontal_rules_in_body_are_not_front_matter(self) -> None:
        """A file with no front matter but two `---` rules in its body has no fields, no error."""
        parsed = parse("# Title\n\nIntro.\n\n---\n\nname: hijack\n\n---\n\nEnd.\n")

        assert parsed.fields == NULL_FIELDS
        assert messages(parsed) == ()

    @pytest.mark.parametrize("raw", [b"", b"\n", b"  \n\t\n"])
    def test_empty_file(self, raw: bytes) -> None:
        """An empty (or whitespace-only) file is a story with null fields and an error."""
        parsed = parse_story(raw, LIMIT)

        assert parsed.fields == NULL_FIELDS
        assert parsed.content == raw.decode()
        assert messages(parsed) == ("file is empty",)

    def test_non_utf8_is_decoded_with_replacement(self) -> None:
        """Non-UTF-8 bytes: content decoded with U+FFFD, fields null, error names the byte."""
        raw = b"---\nname: caf\xe9\n---\nBody\n"
        parsed = parse_story(raw, LIMIT)

        assert parsed.content == "---\nname: caf\ufffd\n---\nBody\n"
        assert parsed.fields == NULL_FIELDS
        assert messages(parsed) == ("not UTF-8 (byte 13)",)

    def test_oversized_file(self) -> None:
        """A file over the limit is a story without content, with null fields and an error."""
        raw = b"---\nname: big\n---\n" + b"x" * 100
        parsed = parse_story(raw, max_bytes=50)

        assert parsed.content is None
        assert parsed.fields == NULL_FIELDS
        assert len(messages(parsed)) == 1
        assert str(len(raw)) in messages(parsed)[0]
        assert "50" in messages(parsed)[0]

    def test_file_exactly_at_limit_is_parsed(self) -> None:
        """The limit is inclusive: a file of exactly max_bytes is parsed normally."""
        raw = b"---\nname: edge\n---\n"
        parsed = parse_story(raw, max_bytes=len(raw))

        assert parsed.fields["name"] == "edge"
        assert parsed.content == raw.decode()
        assert messages(parsed) == ()

    def test_never_raises_on_garbage(self) -> None:
        """Random binary input is still a ParsedStory, never an exception."""
        raw = bytes(range(256)) * 4
        parsed = parse_story(raw, LIMIT)

        assert isinstance(parsed, ParsedStory)
        assert parsed.fields == NULL_FIELDS
        assert messages(parsed)[0].startswith("not UTF-8")


class TestStrictFieldTypes:
    """A known field of the wrong type is null with its error: no coercion (docs/design.md)."""

    def test_numeric_agent_is_null_with_error(self) -> None:
        """`agent: 123` is no text: null, one error that says to quote it; others kept."""
        parsed = parse("---\nname: Login\nagent: 123\nretry_count: 1\n---\n")

        assert parsed.fields == {**NULL_FIELDS, "name": "Login", "retry_count": 1}
        assert messages(parsed) == ("agent: expected text, got 123 (put it in quotes)",)
        assert parsed.broken is False

    @pytest.mark.parametrize("value", ["12", "1.5", "true", "2024-05-01"])
    def test_name_that_yaml_reads_as_no_text_is_null(self, value: str) -> None:
        """A name YAML reads as a number, boolean or date is null with an error to quote it."""
        parsed = parse(f"---\nname: {value}\nagent: bob\n---\n")

        assert parsed.fields["name"] is None
        assert parsed.fields["agent"] == "bob"
        assert len(messages(parsed)) == 1
        assert messages(parsed)[0].startswith("name: expected text, got ")
        assert messages(parsed)[0].endswith("(put it in quotes)")

    def test_name_as_list_is_null_without_quote_hint(self) -> None:
        """`name: [a]` is null; quoting is not the fix, so the error does not suggest it."""
        parsed = parse("---\nname: [a]\n---\n")

        assert parsed.fields["name"] is None
        assert messages(parsed) == ("name: expected text, got ['a']",)

    def test_quoted_number_is_text(self) -> None:
        """A quoted number is text and is kept as written."""
        parsed = parse("---\nname: \"12\"\nagent: '007'\n---\n")

        assert parsed.fields["name"] == "12"
        assert parsed.fields["agent"] == "007"
        assert messages(parsed) == ()

    @pytest.mark.parametrize(
        ("value", "error"),
        [
            ('"12"', "depends_on: expected a list such as [12], got '12'"),
            ("12", "depends_on: expected a list such as [12], got 12"),
            ("40_bug_crash",
             "depends_on: expected a list such as [40_bug_crash], got '40_bug_crash'"),
            ("12, 40_bug_crash",
             "depends_on: expected a list such as [12, 40_bug_crash], got '12, 40_bug_crash'"),
            ("{a: 1}", "depends_on: expected a list such as [12], got {'a': 1}"),
        ],
    )
    def test_depends_on_bare_value_is_null_with_the_fix(self, value: str, error: str) -> None:
        """depends_on must be a list: a bare value is null, and the error shows it as a list."""
        parsed = parse(f"---\nname: kept\ndepends_on: {value}\n---\n")

        assert parsed.fields == {**NULL_FIELDS, "name": "kept"}
        assert messages(parsed) == (error,)

    @pytest.mark.parametrize(
        ("line", "field"),
        [
            ("agent: 123", "agent"),
            ("name: 12", "name"),
            ("name: [a]", "name"),
            ('name: ["first\\nsecond"]', "name"),
            (f"agent: [{'x' * 200}]", "agent"),
            ('depends_on: "12"', "depends_on"),
            ('depends_on: "a\\nb"', "depends_on"),
            ("depends_on: 12", "depends_on"),
            ("retry_count: lots", "retry_count"),
            ("blocked: maybe", "blocked"),
        ],
    )
    def test_error_is_one_short_line_naming_the_field(self, line: str, field: str) -> None:
        """Every type error is one line (newlines in the value escaped), short, and starts
        with the field's name."""
        parsed = parse(f"---\n{line}\n---\n")

        assert len(messages(parsed)) == 1
        error = messages(parsed)[0]
        assert error.startswith(f"{field}: ")
        assert "\n" not in error and "\r" not in error
        assert len(error) < 200


class TestDuplicateKeys:
    """A key written twice in the front matter is an error; PyYAML alone keeps the last."""

    def test_duplicated_known_field_is_null(self) -> None:
        """A known field written twice is null (which value is meant is unclear, e.g. after
        a git merge), with an error naming it; the other fields are kept."""
        parsed = parse("---\nname: Login\nagent: alice\nretry_count: 1\nagent: bob\n---\n")

        assert parsed.fields == {**NULL_FIELDS, "name": "Login", "retry_count": 1}
        assert messages(parsed) == ("duplicate key 'agent' in the front matter",)
        assert parsed.broken is False

    def test_duplicated_known_field_with_a_bad_value_is_one_error(self) -> None:
        """A duplicated field is reported as duplicated only, not also as wrongly typed."""
        parsed = parse("---\nretry_count: lots\nretry_count: 2\n---\n")

        assert parsed.fields["retry_count"] is None
        assert messages(parsed) == ("duplicate key 'retry_count' in the front matter",)

    def test_duplicated_extra_key_keeps_the_last_value(self) -> None:
        """An extra key written twice keeps its last value, with an error naming it."""
        parsed = parse("---\npriority: low\nname: x\npriority: high\n---\n")

        assert parsed.extra == {"priority": "high"}
        assert parsed.fields["name"] == "x"
        assert messages(parsed) == ("duplicate key 'priority' in the front matter",)

    def test_key_written_three_times_is_one_error(self) -> None:
        """Each duplicated key is reported once, however often it is repeated."""
        parsed = parse("---\nblocked: true\nblocked: false\nblocked: true\n---\n")

        assert parsed.fields["blocked"] is None
        assert messages(parsed) == ("duplicate key 'blocked' in the front matter",)

    def test_every_duplicated_key_is_reported(self) -> None:
        """Two duplicated keys give two errors: known fields first, then extra keys."""
        parsed = parse("---\nteam: a\nname: x\nteam: b\nname: y\n---\n")

        assert messages(parsed) == ("duplicate key 'name' in the front matter",
                                 "duplicate key 'team' in the front matter")

    def test_keys_equal_as_text_are_duplicates(self) -> None:
        """`1:` and `'1':` are both stored under "1": one duplicate, the last value kept."""
        parsed = parse("---\n1: one\n'1': uno\n---\n")

        assert parsed.extra == {"1": "uno"}
        assert messages(parsed) == ("duplicate key '1' in the front matter",)

        parsed = parse("---\n1: one\n'1': uno\n'1': eins\n---\n")

        assert parsed.extra == {"1": "eins"}
        assert messages(parsed) == ("duplicate key '1' in the front matter",)

    def test_keys_equal_in_yaml_are_duplicates(self) -> None:
        """`1:` and `true:` are one key once loaded: a duplicate named as the mapping keeps
        it, the last value kept."""
        parsed = parse("---\n1: one\ntrue: yes\n---\n")

        assert parsed.extra == {"1": True}
        assert messages(parsed) == ("duplicate key '1' in the front matter",)

    def test_nested_duplicate_names_the_key_and_the_line(self) -> None:
        """A duplicate inside a nested mapping (block or flow, in a list too) is an error
        with the line of the file; the last value is kept."""
        raw = ("---\nname: x\nowner:\n  team: web\n  team: api\n"
               "history: [{date: a, date: b}]\n---\nBody\n")
        parsed = parse(raw)

        assert parsed.extra == {"owner": {"team": "api"}, "history": [{"date": "b"}]}
        assert parsed.fields["name"] == "x"
        assert messages(parsed) == (
            "duplicate key 'team' in a nested mapping of the front matter (line 5)",
            "duplicate key 'date' in a nested mapping of the front matter (line 6)",
        )

    @pytest.mark.parametrize("opening", ["---\n", "---\n\n\n", "---  \n", "\ufeff---\n"])
    def test_nested_duplicate_line_counts_from_the_top_of_the_file(self, opening: str) -> None:
        """The line given is the file's line, also after blank lines, trailing spaces or a
        byte order mark."""
        raw = f"{opening}owner: {{team: a, team: b}}\n---\n"
        parsed = parse(raw)

        line = raw.removeprefix("\ufeff").splitlines().index("owner: {team: a, team: b}") + 1
        assert messages(parsed) == (
            f"duplicate key 'team' in a nested mapping of the front matter (line {line})",)

    def test_crlf_nested_duplicate_line(self) -> None:
        """Windows line endings give the same line numbers."""
        parsed = parse("---\r\nname: x\r\nowner: {team: a, team: b}\r\n---\r\n")

        assert messages(parsed) == (
            "duplicate key 'team' in a nested mapping of the front matter (line 3)",)

    def test_merge_key_override_is_no_duplicate(self) -> None:
        """Overriding a key brought in by a YAML merge (`<<: *base`) is no duplicate; a key
        written twice next to a merge still is."""
        parsed = parse("---\nbase: &b {a: 1, b: 2}\nover:\n  <<: *b\n  a: 3\n---\n")

        assert parsed.extra["over"] == {"a": 3, "b": 2}
        assert messages(parsed) == ()

        parsed = parse("---\nbase: &b {a: 1, b: 2}\nover:\n  <<: *b\n  c: 3\n  c: 4\n---\n")

        assert parsed.extra["over"] == {"a": 1, "b": 2, "c": 4}
        assert messages(parsed) == (
            "duplicate key 'c' in a nested mapping of the front matter (line 6)",)

    def test_many_duplicates_are_capped(self) -> None:
        """Many duplicated extra keys give at most MAX_DUPLICATE_ERRORS messages and a
        count of the rest; a duplicated known field is always reported."""
        keys = "".join(f"k{i}: 1\nk{i}: 2\n" for i in range(story.MAX_DUPLICATE_ERRORS + 5))
        parsed = parse(f"---\n{keys}agent: a\nagent: b\n---\n")

        assert messages(parsed)[0] == "duplicate key 'agent' in the front matter"
        assert len(messages(parsed)) == 1 + story.MAX_DUPLICATE_ERRORS + 1
        assert messages(parsed)[-1] == "and 5 more duplicate keys"

    def test_duplicate_errors_are_single_line(self) -> None:
        """A key with a line break in it is escaped: the error stays on one line."""
        parsed = parse('---\n"a\\nb": 1\n"a\\nb": 2\n---\n')

        assert messages(parsed) == ("duplicate key 'a\\nb' in the front matter",)

    def test_valid_file_is_unchanged(self) -> None:
        """A realistic file with no duplicate (anchors, merges, nested maps, lists of maps,
        quoted numbers) parses with every value and no error."""
        raw = (
            "---\n"
            "name: \"2048\"\n"
            "agent: coder-1\n"
            "retry_count: 0\n"
            "blocked: false\n"
            "depends_on: [3, 7_story_auth]\n"
            "defaults: &d {team: web, size: 3}\n"
            "owner:\n  <<: *d\n  size: 5\n"
            "history:\n  - {stage: 1_backlog, at: 2024-05-01}\n  - {stage: 2_current}\n"
            "---\nBody.\n"
        )
        parsed = parse(raw)

        assert messages(parsed) == ()
        assert parsed.fields == {"name": "2048", "agent": "coder-1", "retry_count": 0,
                                 "blocked": False, "depends_on": '[3, "7_story_auth"]'}
        assert parsed.extra == {
            "defaults": {"team": "web", "size": 3},
            "owner": {"team": "web", "size": 5},
            "history": [{"stage": "1_backlog", "at": "2024-05-01"}, {"stage": "2_current"}],
        }
        assert parsed.content == raw


class TestParserVersion:
    def test_parser_version_is_exported(self) -> None:
        """PARSER_VERSION is public (the daemon stores it) and is 3 since error codes."""
        assert "PARSER_VERSION" in story.__all__
        assert story.PARSER_VERSION == 3


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
        assert messages(parsed) == ("front matter is not closed by a --- line",)
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
        assert messages(parsed) == ()
