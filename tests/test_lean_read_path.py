"""The read commands' quick path imports neither `re`, `enum`, `pathlib`, `typing` nor
`json`, and what stands in for them gives what they give.

`pipelined show`, `status` and `ls` spent as long importing those (re and enum
through pathlib, typing and json) as on everything else they do
(docs/benchmarks.md). Each stand-in is checked against the module it replaces:
`quickjson` against `json`, `records.NamedTuple` against `typing.NamedTuple`,
`settings` against the regular expressions and `pathlib` calls it replaced.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import DEADLINE_S, Stories

from pipelined import flattoml, quickjson, settings
from pipelined.config import resolve
from pipelined.logs import configure_logging
from pipelined.maintenance import rebuild
from pipelined.paths import clean_path
from pipelined.records import NamedTuple as LeanNamedTuple
from pipelined.scaffold import _config_text
from pipelined.store.preflight import _file_uri

STDLIB_KEPT_OUT = ("re", "enum", "pathlib", "typing", "json", "dataclasses", "inspect",
                   "urllib", "ipaddress", "datetime", "click")

# Imports nothing before the command runs but what the interpreter's start did.
PROBE = """
import sys
before = set(sys.modules)
kept_out = set(sys.argv[1].split(","))
sys.argv = sys.argv[2:]
from pipelined.entry import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted({m.split('.')[0] for m in set(sys.modules) - before} & kept_out)
print("\\nLOADED " + ",".join(loaded), file=sys.stderr)
print("EXIT " + str(code), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lean")
    stories = Stories(tmp / "root")
    stories.write("1_backlog", "1_story_login", name="login form")
    stories.write("2_current", "2_story_export", name="export now", depends_on=[1],
                  priority="high", labels=["a", "b"])
    db = tmp / "p.db"
    rebuild(resolve({"root": stories.root, "db": db}, env={}))
    configure_logging()  # rebuild logged to this module's stderr
    return stories.root, db


@pytest.fixture(scope="module", params=["no project file", "pipelined init's project file"])
def settings_flags(request: pytest.FixtureRequest, built: tuple[Path, Path]) -> list[str]:
    """The settings options of the built stories, their root without a `pipelined.toml`
    or with the one `pipelined init` writes (the quick path reads it)."""
    root, db = built
    project = root / "pipelined.toml"
    if request.param == "no project file":
        project.unlink(missing_ok=True)
    else:
        project.write_text(_config_text(root, ["1_backlog", "2_current", "4_merge"]),
                           encoding="utf-8")
    return ["--root", str(root), "--db", str(db)]


@pytest.mark.parametrize("command", [("show", "2"), ("status",), ("ls",),
                                     ("ls", "--stage", "current")], ids=" ".join)
def test_the_quick_path_keeps_them_out(settings_flags: list[str],
                                       command: tuple[str, ...]) -> None:
    """A story with extra keys and a list, read without a daemon: none of them is
    imported. (Text `isprintable()` refuses, such as a non-breaking space, brings `re`
    back: test_terminal_safety.py checks that path.)"""
    sys_argv = ["pipelined", *command, *settings_flags]
    done = subprocess.run([sys.executable, "-c", PROBE, ",".join(STDLIB_KEPT_OUT), *sys_argv],
                          capture_output=True, text=True, timeout=DEADLINE_S, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    marker = [line for line in done.stderr.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr
    assert "EXIT 0" in done.stderr.splitlines(), done.stderr + done.stdout
    assert marker[-1] == "LOADED ", marker[-1]


class TestQuickJson:
    def random_value(self, rng: random.Random, depth: int = 0) -> Any:
        kinds = ["str", "int", "float", "none", "bool"] + (["list", "dict"] if depth < 4 else [])
        kind = rng.choice(kinds)
        if kind == "str":
            alphabet = ["a", "é", '"', "\\", "\n", "\x00", "\u202e", "\U0001f600", "/", " "]
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
        if kind == "int":
            return rng.choice([0, -1, 7, 2**63, -(10**30)])
        if kind == "float":
            return rng.choice([0.5, -0.0, 1e300, 1e-300, 3.141592653589793])
        if kind == "none":
            return None
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "list":
            return [self.random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return {self.random_value(rng, 4) if rng.random() < 0.9 else "k": self.random_value(
            rng, depth + 1) for _ in range(rng.randrange(4))}

    def test_both_ways_equal_json(self) -> None:
        rng = random.Random(23)
        for _ in range(3000):
            value = self.random_value(rng)
            text = json.dumps(value, ensure_ascii=False)
            assert quickjson.dumps(value) == text
            assert quickjson.loads(text) == json.loads(text)
            assert quickjson.loads(text.encode()) == json.loads(text.encode())
            spaced = json.dumps(value, indent=2, ensure_ascii=True)
            assert quickjson.loads(f" \n{spaced}\t ") == json.loads(spaced)

    @pytest.mark.parametrize("text", ["", "[1] x", "{", '"\\ud800', "[1,]", "tru", "\ufeff{}",
                                      '"a\x01"', "{'a': 1}", "1" * 5000, "[" * 100_000])
    def test_errors_are_json_s(self, text: str) -> None:
        """What the scanner does not take whole is json.loads's to decode or refuse."""
        try:
            expected: Any = json.loads(text)
        except (ValueError, RecursionError) as exc:
            with pytest.raises(type(exc)):
                quickjson.loads(text)
        else:
            assert quickjson.loads(text) == expected

    def test_constants_and_bytes(self) -> None:
        assert math.isnan(quickjson.loads("NaN"))
        assert quickjson.loads("[Infinity, -Infinity]") == [math.inf, -math.inf]
        assert quickjson.loads(b"\xef\xbb\xbf{}") == json.loads(b"\xef\xbb\xbf{}") == {}
        with pytest.raises(UnicodeDecodeError):
            quickjson.loads(b'"\xff"')

    @pytest.mark.parametrize("value", [(1, 2), {1: "a"}, {"k": math.nan}, math.inf, {None: 1},
                                       [1.5, (2,)], b"x", 10**5000],
                             ids=["tuple", "int-key", "nan", "inf", "none-key", "nested-tuple",
                                  "bytes", "huge-int"])
    def test_what_it_leaves_to_json(self, value: Any) -> None:
        """Tuples, non-string keys, non-finite floats, other types: json's text or error."""
        try:
            expected = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                quickjson.dumps(value)
        else:
            assert quickjson.dumps(value) == expected

    @pytest.mark.parametrize("value", [bytearray(b"[1]"), None, 5, memoryview(b"[1]")],
                             ids=["bytearray", "none", "int", "memoryview"])
    def test_other_types_are_json_s(self, value: Any) -> None:
        try:
            expected = json.loads(value)
        except TypeError:
            with pytest.raises(TypeError):
                quickjson.loads(value)
        else:
            assert quickjson.loads(value) == expected

    def test_without_the_c_module_it_is_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(quickjson, "_scan", None)
        monkeypatch.setattr(quickjson, "_encode_string", None)
        assert quickjson.loads('{"a": [1]}') == {"a": [1]}
        assert quickjson.dumps({"a": "é"}) == '{"a": "é"}'
        with pytest.raises(json.JSONDecodeError):
            quickjson.loads("[")


class Typed(NamedTuple):
    """A record."""

    name: str
    size: int = 3
    tags: tuple[str, ...] = ()

    @property
    def big(self) -> bool:
        return self.size > 10

    def grown(self) -> Typed:
        return self._replace(size=self.size + 1)


class Lean(LeanNamedTuple):  # type: ignore[misc, valid-type]
    """A record."""

    name: str
    size: int = 3
    tags: tuple[str, ...] = ()

    @property
    def big(self) -> bool:
        return self.size > 10

    def grown(self) -> Lean:
        return self._replace(size=self.size + 1)  # type: ignore[no-any-return]


class TestRecords:
    def test_it_behaves_as_typing_s(self) -> None:
        for record in (Typed, Lean):
            value = record("a")
            assert value == ("a", 3, ())
            assert record._fields == ("name", "size", "tags")
            assert record._field_defaults == {"size": 3, "tags": ()}
            assert value.grown().size == 4 and not value.big and record("b", 11).big
            assert value._asdict() == {"name": "a", "size": 3, "tags": ()}
            assert record.__doc__ == "A record."
            assert record.__name__ == record.__qualname__ == record.__name__
            assert repr(value) == f"{record.__name__}(name='a', size=3, tags=())"
            with pytest.raises(AttributeError):
                value.name = "b"  # type: ignore[misc]

    def test_pickled_by_name(self) -> None:
        from pipelined.schema import StoryError

        error = StoryError("empty", "the file is empty")
        assert pickle.loads(pickle.dumps(error)) == error
        assert type(pickle.loads(pickle.dumps(error))) is StoryError

    def test_a_field_without_default_after_one_with(self) -> None:
        with pytest.raises(TypeError):
            class _Bad(LeanNamedTuple):  # type: ignore[misc, valid-type]
                a: int = 1
                b: int

    def test_its_own_attributes_cannot_be_overwritten(self) -> None:
        with pytest.raises(AttributeError):
            class _Bad(LeanNamedTuple):  # type: ignore[misc, valid-type]
                a: int

                def _replace(self) -> None: ...


class TestSettingsWithoutRe:
    STAGE = re.compile(r"^[0-9]{1,18}_[A-Za-z0-9][A-Za-z0-9_-]*$")  # what config.py had

    def test_stage_names(self) -> None:
        """The same answer as the regular expression config.py used, for every name
        below, but for a name ending in a newline (which `$` let through)."""
        rng = random.Random(5)
        alphabet = ["1", "0", "_", "-", "a", "Z", "é", "\u0661", " ", ".", "\n"]
        names = ["1_backlog", "2_current", "18_x", "1234567890123456789_x", "1_", "_a", "1_-a",
                 "01_a-b_c", "1_a\n", "a_1"]
        names += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 8)))
                  for _ in range(20_000)]
        for name in names:
            expected = bool(self.STAGE.match(name)) and not name.endswith("\n")
            assert settings.is_stage_name(name) == expected, repr(name)

    def test_stage_aliases(self) -> None:
        stages = ("1_backlog", "2_current", "\u0661_x", "review")
        assert settings.resolve_stage("Current", stages) == "2_current"
        assert settings.resolve_stage("review", stages) == "review"
        assert settings.resolve_stage("\u0661_x", stages) == "\u0661_x"
        with pytest.raises(Exception, match="unknown stage"):
            settings.resolve_stage("x", stages)  # `\u0661` is no ASCII digit: no alias

    @pytest.mark.parametrize("name", ["stories", "my stories", "é?#%", "a.b-c_d"])
    def test_default_db_path(self, tmp_path: Path, name: str) -> None:
        """The name pathlib and re made: the root's name with what is not
        [A-Za-z0-9._-] as `_`, and ten hex digits of the SHA-256 of its real path."""
        import hashlib

        root = tmp_path / name
        root.mkdir()
        real = root.resolve()
        expected = (f"{re.sub(r'[^A-Za-z0-9._-]', '_', real.name) or 'root'}-"
                    f"{hashlib.sha256(str(real).encode()).hexdigest()[:10]}.db")
        path = settings.default_db_path(root, env={"STATE_DIRECTORY": str(tmp_path)})
        assert path == str(tmp_path / expected)
        assert settings.default_db_path("/", env={"STATE_DIRECTORY": "/s"}).startswith("/s/root-")

    def test_clean_path_is_pathlib_s(self) -> None:
        rng = random.Random(3)
        paths = ["", ".", "/", "//", "///a", "//a/b", "./x.db", "a//b/./c/", "../x", "~/x"]
        paths += ["".join(rng.choice(["/", ".", "a", "..", "//", "é"])
                          for _ in range(rng.randrange(8))) for _ in range(20_000)]
        for path in paths:
            assert clean_path(path) == str(Path(path)), path

    @pytest.mark.parametrize("name", ["p.db", "a b/p.db", "q?x#y%z.db", "é/p.db", "a+b/p;c.db",
                                      "link/../p.db"])
    def test_file_uri_is_pathlib_s(self, tmp_path: Path, name: str) -> None:
        """As `Path.as_uri` of the absolute path: `..` is kept for the kernel, which
        resolves it after the symlink (`link` points elsewhere)."""
        path = tmp_path / name
        assert _file_uri(path) == path.as_uri()
        assert _file_uri(str(path)) == path.as_uri()

    def test_a_db_beyond_a_symlink_and_dot_dot_is_read(self, settings_flags: list[str],
                                                       tmp_path: Path) -> None:
        """`--db LINK/../p.db` names the file beside the link's target, as the kernel
        resolves it: the read command's checks read that file, not the one the text
        `..` would name."""
        db = Path(settings_flags[3])
        elsewhere = tmp_path / "elsewhere" / "inner"
        elsewhere.mkdir(parents=True)
        (tmp_path / "here").mkdir()
        (tmp_path / "here" / "link").symlink_to(elsewhere)
        (tmp_path / "elsewhere" / "p.db").write_bytes(db.read_bytes())
        done = subprocess.run(
            [sys.executable, "-m", "pipelined", "status", "--root", settings_flags[1],
             "--db", str(tmp_path / "here" / "link" / ".." / "p.db")],
            capture_output=True, text=True, timeout=DEADLINE_S, check=False)
        assert done.returncode == 0, done.stderr
        assert "stories:   2" in done.stdout

    def test_an_empty_root_is_the_current_folder(self, tmp_path: Path) -> None:
        """`--root ""` is the current folder (as `Path("")` was), not a search upward."""
        values = settings.resolve({"root": ""}, env={}, cwd=tmp_path)
        assert values["root"] == "."


class TestFlatToml:
    """`flattoml.loads` gives tomllib's result for every file it takes, and takes the
    files pipelined writes."""

    def test_pipelined_s_own_files(self) -> None:
        import tomllib

        written = _config_text(Path("."), ["1_a", "2_b"])  # what `pipelined init` writes
        assert 'root = "."  #' in written
        for text in (written, written.replace("\n", "\r\n"),
                     'stages = ["1_a", "2_b",]\nroot = \'/x y\'\nsettle_ms=-0\n'):
            assert flattoml.loads(text) == tomllib.loads(text) != {}

    @pytest.mark.parametrize("text", [
        "[table]\na = 1", "a = 1 # note", "a = 1#n", 'a = "x"# n', "a = [] # n",
        'a = "x" y', "a = 1 2", 'a = ["x"] ]', "a = 'x' # n", 'a = "#" # "', 'a = "x\\ty"',
        "a = 1\na = 2", "a = 01", "a = +1",
        "a = 1_000", "a = 1.", "a = .5", "a = 1e5", "a = inf", "a = 1979-05-27",
        'a = ["x", 1]', 'a = [\n"x"]', "a.b = 1", '"a" = 1', "a = \u00a0", "a = [,]",
        'a = ["x",,]', 'a = "x" "y"', "a =", "= 1", "a = 'x'y'", "# \x00\na = 1",
        "a = 1\rb = 2", "a = True", "a = 1234567890123456789", '\ufeffa = 1', "a = \"x",
        'a = ["a,b"]', "a = [ ]", "a = -", "a\t=\t1",
    ])
    def test_what_it_leaves_to_tomllib(self, text: str) -> None:
        """Tables, comments after a value, escapes, duplicates, other numbers and
        types, control characters: tomllib reads them (or refuses them) itself, and
        what flattoml does read equals tomllib's result."""
        import tomllib

        try:
            expected: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            assert flattoml.loads(text) is None
        else:
            got = flattoml.loads(text)
            assert got is None or got == expected, (got, expected)

    def test_random_simple_files(self) -> None:
        import tomllib

        rng = random.Random(11)
        pieces = ['"a b"', "'c'", '"é#="', "0", "-7", "42", "3.25", "-0.5", "true", "false",
                  '["x", "y z"]', "[]", '[ "q" , ]', "''", '""', '"." # c', "1#c", "[] #"]
        for _ in range(2000):
            keys = rng.sample(["root", "db", "k_1", "a-b", "X"], rng.randrange(1, 5))
            lines = [f"{key}{rng.choice([' = ', '=', '  =  '])}{rng.choice(pieces)}"
                     for key in keys]
            lines.insert(rng.randrange(len(lines) + 1), rng.choice(["", "# c", "   # x = 1"]))
            text = rng.choice(["\n", "\r\n"]).join(lines)
            assert flattoml.loads(text) == tomllib.loads(text), text

