"""Unit tests of `pipelined.config`: parsing, layering, validation, the default database."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelined.config import DEFAULT_STAGES, Config, default_db_path, parse, resolve
from pipelined.errors import ConfigError, PipelinedError


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no PIPELINED_* variables and no user config file in reach."""
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "no-config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


class TestParse:
    def test_every_setting_is_typed(self) -> None:
        """Each TOML value comes back as the type of its Config field."""
        settings = parse(
            'root = "/srv/stories"\n'
            'db = "/var/lib/p.db"\n'
            'stages = ["1_backlog", "3_review"]\n'
            "settle_ms = 250\n"
            "settle_cap_ms = 5000\n"
            "delete_grace_ms = 0\n"
            "git_lock_cap_s = 2\n"
            "max_file_bytes = 4096\n"
            "rescan_interval_s = 60\n"
            "writer_queue = 8\n"
            'log_format = "JSON"\n'
            'log_level = "Debug"\n'
        )

        assert settings == {
            "root": Path("/srv/stories"),
            "db": Path("/var/lib/p.db"),
            "stages": ("1_backlog", "3_review"),
            "settle_ms": 250,
            "settle_cap_ms": 5000,
            "delete_grace_ms": 0,
            "git_lock_cap_s": 2.0,
            "max_file_bytes": 4096,
            "rescan_interval_s": 60.0,
            "writer_queue": 8,
            "log_format": "json",
            "log_level": "debug",
        }
        assert isinstance(settings["git_lock_cap_s"], float)
        assert isinstance(settings["rescan_interval_s"], float)

    def test_empty_text_is_no_settings(self) -> None:
        """An empty config file sets nothing."""
        assert parse("") == {}
        assert parse("# only a comment\n") == {}

    def test_stages_as_comma_separated_text(self) -> None:
        """stages may be one comma-separated string; blanks are trimmed."""
        assert parse('stages = "1_backlog, 2_current ,,4_merge"') == {
            "stages": ("1_backlog", "2_current", "4_merge")
        }

    def test_tilde_in_root_is_expanded(self) -> None:
        """`~` in root means the home folder."""
        root = parse('root = "~/stories"')["root"]

        assert root == Path.home() / "stories"

    def test_empty_db_means_default(self) -> None:
        """An empty db string means "derive it from the root"."""
        assert parse('db = ""') == {"db": None}

    @pytest.mark.parametrize(
        ("text", "field", "value"),
        [
            ('settle_ms = "soon"', "settle_ms", "soon"),
            ("settle_ms = true", "settle_ms", True),
            ("writer_queue = [1]", "writer_queue", [1]),
            ("rescan_interval_s = false", "rescan_interval_s", False),
            ('rescan_interval_s = "often"', "rescan_interval_s", "often"),
            ("stages = [1, 2]", "stages", [1, 2]),
            ("stages = 3", "stages", 3),
            ("log_format = 3", "log_format", 3),
        ],
    )
    def test_wrong_type_names_field_and_value(self, text: str, field: str, value: object) -> None:
        """A value of the wrong type is a ConfigError carrying the field and the value."""
        with pytest.raises(ConfigError) as caught:
            parse(text)

        assert caught.value.field == field
        assert caught.value.value == value
        assert f"{field}={value!r}" in str(caught.value)

    def test_unknown_key(self) -> None:
        """An unknown key is an error naming it (typos are not silently ignored)."""
        with pytest.raises(ConfigError) as caught:
            parse("settle_msec = 10")

        assert caught.value.field == "settle_msec"
        assert caught.value.value == 10
        assert "unknown setting" in str(caught.value)

    def test_unknown_table(self) -> None:
        """A TOML table is an unknown key too."""
        with pytest.raises(ConfigError) as caught:
            parse("[daemon]\nsettle_ms = 10\n")

        assert caught.value.field == "daemon"

    def test_bad_toml(self) -> None:
        """Text that is not TOML is a ConfigError naming the source, on one line."""
        with pytest.raises(ConfigError) as caught:
            parse("settle_ms = = 3", source="/etc/pipelined.toml")

        assert caught.value.field == "/etc/pipelined.toml"
        assert "not valid TOML" in str(caught.value)
        assert "\n" not in str(caught.value)

    def test_config_error_is_a_pipelined_error(self) -> None:
        """ConfigError is a PipelinedError with its own exit code."""
        with pytest.raises(PipelinedError) as caught:
            parse("nope = 1")

        assert caught.value.exit_code == 2

    def test_float_for_integer_setting_is_refused(self) -> None:
        """`settle_ms = 1.5` is a ConfigError, like the same value from the environment."""
        with pytest.raises(ConfigError):
            parse("settle_ms = 1.5")


class TestResolve:
    @pytest.fixture(autouse=True)
    def _in_a_root(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run from a folder with stage folders: a test without a root finds this one
        (tests/test_root_discovery.py tests the finding)."""
        here = tmp_path / "cwd"
        for stage in ("1_backlog", "2_current", "4_merge", "1_a", "2_b"):
            (here / stage).mkdir(parents=True)
        monkeypatch.chdir(here)

    def test_defaults(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """With no flags, env or file, every setting is its default."""
        config = resolve({"root": tmp_path}, env=clean_env)

        assert config == Config(root=tmp_path)
        assert config.stages == DEFAULT_STAGES
        assert config.settle_ms == 100
        assert config.max_file_bytes == 1024 * 1024

    def test_file_over_defaults(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """A config file's values replace the defaults; the rest stay default."""
        config_file = tmp_path / "c.toml"
        config_file.write_text("settle_ms = 200\nlog_level = 'warning'\n")

        config = resolve({}, env=clean_env, config_file=config_file)

        assert config.settle_ms == 200
        assert config.log_level == "warning"
        assert config.settle_cap_ms == 3000

    def test_env_over_file(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """PIPELINED_* variables beat the config file, for the keys they set."""
        config_file = tmp_path / "c.toml"
        config_file.write_text("settle_ms = 200\nwriter_queue = 5\n")
        env = {**clean_env, "PIPELINED_SETTLE_MS": "300", "PIPELINED_STAGES": "1_a,2_b"}

        config = resolve({}, env=env, config_file=config_file)

        assert config.settle_ms == 300
        assert config.stages == ("1_a", "2_b")
        assert config.writer_queue == 5

    def test_flags_over_env_over_file(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """Flags beat the environment and the file; a None flag means "not given"."""
        config_file = tmp_path / "c.toml"
        config_file.write_text("settle_ms = 200\nsettle_cap_ms = 4000\nwriter_queue = 5\n")
        env = {**clean_env, "PIPELINED_SETTLE_MS": "300", "PIPELINED_SETTLE_CAP_MS": "6000"}

        config = resolve(
            {"settle_ms": 400, "settle_cap_ms": None}, env=env, config_file=config_file
        )

        assert config.settle_ms == 400
        assert config.settle_cap_ms == 6000
        assert config.writer_queue == 5

    def test_empty_env_value_is_ignored(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """An empty PIPELINED_* variable does not override the file."""
        config_file = tmp_path / "c.toml"
        config_file.write_text("settle_ms = 200\n")

        config = resolve({}, env={**clean_env, "PIPELINED_SETTLE_MS": ""}, config_file=config_file)

        assert config.settle_ms == 200

    def test_root_and_db_from_env(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """PIPELINED_ROOT and PIPELINED_DB set the root and the database."""
        env = {
            **clean_env,
            "PIPELINED_ROOT": str(tmp_path / "r"),
            "PIPELINED_DB": str(tmp_path / "x.db"),
        }

        config = resolve({}, env=env)

        assert config.root == tmp_path / "r"
        assert config.db_path == tmp_path / "x.db"

    def test_pipelined_config_env_names_the_file(
        self, clean_env: dict[str, str], tmp_path: Path
    ) -> None:
        """$PIPELINED_CONFIG points at the config file to read."""
        config_file = tmp_path / "elsewhere.toml"
        config_file.write_text("writer_queue = 9\n")

        config = resolve({}, env={**clean_env, "PIPELINED_CONFIG": str(config_file)})

        assert config.writer_queue == 9

    def test_default_config_path_is_read_when_present(
        self, clean_env: dict[str, str], tmp_path: Path
    ) -> None:
        """Without an explicit file, $XDG_CONFIG_HOME/pipelined/config.toml is read if it exists."""
        folder = Path(clean_env["XDG_CONFIG_HOME"]) / "pipelined"
        folder.mkdir(parents=True)
        (folder / "config.toml").write_text("writer_queue = 11\n")

        assert resolve({}, env=clean_env).writer_queue == 11

    def test_missing_explicit_file_is_an_error(
        self, clean_env: dict[str, str], tmp_path: Path
    ) -> None:
        """An explicitly named config file that does not exist is a ConfigError."""
        missing = tmp_path / "missing.toml"

        with pytest.raises(ConfigError) as caught:
            resolve({}, env=clean_env, config_file=missing)

        assert caught.value.value == str(missing)
        assert "cannot read it" in str(caught.value)

    def test_bad_env_value_names_the_setting(self, clean_env: dict[str, str]) -> None:
        """A bad PIPELINED_* value is a ConfigError naming the setting and the value."""
        with pytest.raises(ConfigError) as caught:
            resolve({}, env={**clean_env, "PIPELINED_WRITER_QUEUE": "many"})

        assert caught.value.field == "writer_queue"
        assert caught.value.value == "many"

    def test_unknown_flag(self, clean_env: dict[str, str]) -> None:
        """A flag that is no setting is refused."""
        with pytest.raises(ConfigError) as caught:
            resolve({"colour": "red"}, env=clean_env)

        assert caught.value.field == "colour"

    def test_result_is_validated(self, clean_env: dict[str, str], tmp_path: Path) -> None:
        """The layered result is validated: a bad combination is refused."""
        config_file = tmp_path / "c.toml"
        config_file.write_text("settle_ms = 500\nsettle_cap_ms = 100\n")

        with pytest.raises(ConfigError) as caught:
            resolve({}, env=clean_env, config_file=config_file)

        assert caught.value.field == "settle_cap_ms"
        assert caught.value.value == 100


class TestConfigValidate:
    def test_defaults_are_valid(self) -> None:
        """The default config validates and returns itself."""
        config = Config()

        assert config.validate() is config

    @pytest.mark.parametrize(
        ("changes", "field", "value"),
        [
            ({"stages": ()}, "stages", []),
            ({"stages": ("backlog",)}, "stages", "backlog"),
            ({"stages": ("1_backlog", "../x")}, "stages", "../x"),
            ({"stages": ("1_a", "1_a")}, "stages", ["1_a", "1_a"]),
            ({"settle_ms": 0}, "settle_ms", 0),
            ({"settle_cap_ms": -5}, "settle_cap_ms", -5),
            ({"max_file_bytes": 0}, "max_file_bytes", 0),
            ({"writer_queue": 0}, "writer_queue", 0),
            ({"delete_grace_ms": -1}, "delete_grace_ms", -1),
            ({"settle_ms": 200, "settle_cap_ms": 100}, "settle_cap_ms", 100),
            ({"rescan_interval_s": 0.0}, "rescan_interval_s", 0.0),
            ({"log_format": "xml"}, "log_format", "xml"),
            ({"log_level": "loud"}, "log_level", "loud"),
        ],
    )
    def test_bad_value_names_field_and_value(
        self, changes: dict[str, object], field: str, value: object
    ) -> None:
        """Each bad setting is a ConfigError naming that field and its value."""
        config = Config()._replace(**changes)  # type: ignore[arg-type]

        with pytest.raises(ConfigError) as caught:
            config.validate()

        assert caught.value.field == field
        assert caught.value.value == value

    def test_zero_delete_grace_is_allowed(self) -> None:
        """delete_grace_ms may be 0 (delete as soon as a burst settles)."""
        assert Config(delete_grace_ms=0).validate().delete_grace_ms == 0

    def test_negative_git_lock_cap_names_its_field(self) -> None:
        """A negative git_lock_cap_s is refused naming git_lock_cap_s and its value."""
        with pytest.raises(ConfigError) as caught:
            Config(git_lock_cap_s=-1.0).validate()

        assert caught.value.field == "git_lock_cap_s"
        assert caught.value.value == -1.0


class TestDefaultDbPath:
    def test_same_basename_different_roots(self, tmp_path: Path) -> None:
        """Two roots with the same folder name get two different databases."""
        env = {"XDG_STATE_HOME": str(tmp_path / "state")}
        first = default_db_path(tmp_path / "a" / "stories", env)
        second = default_db_path(tmp_path / "b" / "stories", env)

        assert first != second
        assert first.parent == second.parent == tmp_path / "state" / "pipelined"
        assert first.name.startswith("stories-")
        assert first.suffix == ".db"

    def test_same_root_same_db(self, tmp_path: Path) -> None:
        """The same root, spelled differently, always maps to the same database."""
        env = {"XDG_STATE_HOME": str(tmp_path / "state")}
        (tmp_path / "r").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "r")

        assert default_db_path(tmp_path / "r", env) == default_db_path(tmp_path / "r" / ".", env)
        assert default_db_path(tmp_path / "r", env) == default_db_path(tmp_path / "link", env)

    def test_state_directory_is_honoured(self, tmp_path: Path) -> None:
        """Under systemd the database lives in $STATE_DIRECTORY (the first of several)."""
        env = {"STATE_DIRECTORY": f"{tmp_path}/sd:/other", "XDG_STATE_HOME": "/ignored"}

        path = default_db_path(tmp_path / "stories", env)

        assert path.parent == tmp_path / "sd"

    def test_home_fallback(self, tmp_path: Path) -> None:
        """Without STATE_DIRECTORY or XDG_STATE_HOME it is ~/.local/state/pipelined."""
        path = default_db_path(tmp_path / "stories", {})

        assert path.parent == Path.home() / ".local" / "state" / "pipelined"

    def test_odd_characters_in_root_name(self, tmp_path: Path) -> None:
        """Spaces and other odd characters in the root name become underscores."""
        path = default_db_path(tmp_path / "my stories:v2", {"STATE_DIRECTORY": str(tmp_path)})

        assert path.name.startswith("my_stories_v2-")

    def test_config_db_path_uses_configured_db(self, tmp_path: Path) -> None:
        """Config.db_path is the configured db when set, else derived from the root."""
        assert Config(root=tmp_path, db=tmp_path / "x.db").db_path == tmp_path / "x.db"
        assert Config(root=tmp_path).db_path == default_db_path(tmp_path)


class TestSampleConfig:
    def test_sample_config_parses_to_the_defaults(self) -> None:
        """The commented sample shipped in the package is valid and states the defaults."""
        from pathlib import Path

        from pipelined.config import Config, parse

        sample = Path(__file__).resolve().parents[1] / "pipelined" / "config.sample.toml"
        settings = parse(sample.read_text(encoding="utf-8"))
        defaults = Config()
        assert settings
        for name, value in settings.items():
            assert getattr(defaults, name) == value, name


class TestStageNames:
    @pytest.mark.parametrize("stage", ["1" * 18 + "_done"])
    def test_a_stage_number_of_18_digits_is_fine(self, stage: str) -> None:
        assert Config(root=Path("."), stages=(stage,)).validate().stages == (stage,)

    @pytest.mark.parametrize("stage", ["1" * 19 + "_done", "backlog", "1_", "²_x"])
    def test_other_stage_names_are_refused(self, stage: str) -> None:
        """A stage number SQLite cannot hold would break the paged order (the list API's
        keyset), so it is refused with the others."""
        with pytest.raises(ConfigError, match="at most 18 digits"):
            Config(root=Path("."), stages=(stage,)).validate()
