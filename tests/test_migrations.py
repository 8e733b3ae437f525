"""Unit tests of `pipelined.store.migrations` on a real SQLite file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from pipelined.errors import MigrationError, PipelinedError
from pipelined.store.migrations import (
    Migration,
    apply_migrations,
    known_migrations,
    migrations_folder,
)

PIPELINE_ITEMS_COLUMNS = [
    "id",
    "name",
    "stage",
    "agent",
    "retry_count",
    "blocked",
    "depends_on",
    "content",
    "created_at",
    "updated_at",
]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pipelined.db"


@pytest.fixture
def conn(db_path: Path) -> Iterator[apsw.Connection]:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    connection = apsw.Connection(str(db_path))
    yield connection
    connection.close()


def tables(conn: apsw.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def recorded(conn: apsw.Connection) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT name, checksum FROM schema_migrations ORDER BY name").fetchall()
    return [(str(name), str(checksum)) for name, checksum in rows]


class TestKnownMigrations:
    def test_ships_the_initial_migration(self) -> None:
        """The code knows its migrations, starting with 0001_initial.sql, in name order."""
        names = [m.name for m in known_migrations()]

        assert names[0] == "0001_initial.sql"
        assert names == sorted(names)
        assert migrations_folder().is_dir()

    def test_only_well_named_sql_files(self, tmp_path: Path) -> None:
        """Only `NNNN_name.sql` files count, sorted by name; other files are ignored."""
        for name in ("0002_b.sql", "0001_a.sql", "notes.sql", "0003_c.sql.bak", "README"):
            (tmp_path / name).write_text(f"-- {name}\n")

        assert [m.name for m in known_migrations(tmp_path)] == ["0001_a.sql", "0002_b.sql"]

    def test_checksum_is_sha256_of_the_text(self) -> None:
        """A migration's checksum changes with its text and is a SHA-256 hex digest."""
        first = Migration("0001_a.sql", "CREATE TABLE a(x);")
        second = Migration("0001_a.sql", "CREATE TABLE a(x, y);")

        assert re.fullmatch(r"[0-9a-f]{64}", first.checksum)
        assert first.checksum != second.checksum


class TestApplyMigrations:
    def test_fresh_database_gets_0001(self, conn: apsw.Connection, db_path: Path) -> None:
        """A fresh file gets 0001 applied and recorded with its checksum."""
        applied = apply_migrations(conn, db_path)

        initial = known_migrations()[0]
        assert applied[0] == "0001_initial.sql"
        assert applied == [m.name for m in known_migrations()]
        assert ("0001_initial.sql", initial.checksum) in recorded(conn)
        assert {"pipeline_items", "schema_migrations"} <= tables(conn)

    def test_pipeline_items_columns_are_the_contract(
        self, conn: apsw.Connection, db_path: Path
    ) -> None:
        """pipeline_items has exactly the contract's columns, in order, with id as key."""
        apply_migrations(conn, db_path)

        info = conn.execute("PRAGMA table_info(pipeline_items)").fetchall()
        assert [row[1] for row in info] == PIPELINE_ITEMS_COLUMNS
        by_name = {row[1]: row for row in info}
        assert by_name["id"][5] == 1  # primary key
        assert by_name["stage"][3] == 1  # NOT NULL
        assert by_name["retry_count"][2] == "INTEGER"

    def test_pipeline_items_accepts_a_row(self, conn: apsw.Connection, db_path: Path) -> None:
        """A story row goes in and comes back, and stage may not be null."""
        apply_migrations(conn, db_path)

        conn.execute(
            "INSERT INTO pipeline_items(id, name, stage, retry_count, blocked) "
            "VALUES ('10_a', 'A', '1_backlog', 0, 0)"
        )
        assert conn.execute("SELECT id, stage FROM pipeline_items").fetchall() == [
            ("10_a", "1_backlog")
        ]
        with pytest.raises(apsw.ConstraintError):
            conn.execute("INSERT INTO pipeline_items(id, stage) VALUES ('11_b', NULL)")

    def test_persists_in_the_file(self, conn: apsw.Connection, db_path: Path) -> None:
        """What was applied is in the file: a new connection sees the schema and the record."""
        apply_migrations(conn, db_path)
        conn.close()

        again = apsw.Connection(str(db_path))
        try:
            assert "pipeline_items" in tables(again)
            assert recorded(again)[0][0] == "0001_initial.sql"
        finally:
            again.close()

    def test_idempotent(self, conn: apsw.Connection, db_path: Path) -> None:
        """Applying again applies nothing and changes nothing."""
        apply_migrations(conn, db_path)
        before = recorded(conn)
        conn.execute("INSERT INTO pipeline_items(id, stage) VALUES ('10_a', '1_backlog')")

        assert apply_migrations(conn, db_path) == []
        assert recorded(conn) == before
        assert conn.execute("SELECT count(*) FROM pipeline_items").fetchall() == [(1,)]

    def test_refuses_unknown_migration(self, conn: apsw.Connection, db_path: Path) -> None:
        """A database holding a migration this code does not know is refused."""
        apply_migrations(conn, db_path)
        conn.execute(
            "INSERT INTO schema_migrations(name, checksum, applied_at) "
            "VALUES ('9999_from_the_future.sql', 'abc', '2030-01-01T00:00:00Z')"
        )

        with pytest.raises(MigrationError) as caught:
            apply_migrations(conn, db_path)

        assert "9999_from_the_future.sql" in str(caught.value)
        assert caught.value.path == db_path
        assert isinstance(caught.value, PipelinedError)

    def test_refuses_changed_checksum(self, conn: apsw.Connection, db_path: Path) -> None:
        """A migration whose text changed since it was applied is refused."""
        original = Migration("0001_a.sql", "CREATE TABLE a(x);")
        apply_migrations(conn, db_path, [original])

        edited = Migration("0001_a.sql", "CREATE TABLE a(x, y);")
        with pytest.raises(MigrationError) as caught:
            apply_migrations(conn, db_path, [edited])

        assert "0001_a.sql" in str(caught.value)
        assert "changed" in str(caught.value)
        assert recorded(conn) == [("0001_a.sql", original.checksum)]

    def test_refuses_a_tampered_recorded_checksum(self, conn: apsw.Connection,
                                                 db_path: Path) -> None:
        """The restart fast path (a CRC over names, recorded checksums and texts) still
        sees a recorded checksum that no longer matches the text."""
        migration = Migration("0001_a.sql", "CREATE TABLE a(x);")
        apply_migrations(conn, db_path, [migration])
        assert apply_migrations(conn, db_path, [migration]) == []  # the fast path
        conn.execute("UPDATE schema_migrations SET checksum = ?", ("0" * 64,))

        with pytest.raises(MigrationError, match=r"0001_a\.sql changed"):
            apply_migrations(conn, db_path, [migration])

    def test_fingerprint_is_kept_only_after_a_full_check(self, conn: apsw.Connection,
                                                         db_path: Path) -> None:
        """The CRC is written once the checksums were verified, and changes with a new
        migration; a refused database keeps the old one."""
        first = Migration("0001_a.sql", "CREATE TABLE a(x);")
        second = Migration("0002_b.sql", "CREATE TABLE b(y);")
        apply_migrations(conn, db_path, [first])
        crc_one = conn.execute("SELECT crc FROM schema_fingerprint").fetchall()
        apply_migrations(conn, db_path, [first, second])
        crc_two = conn.execute("SELECT crc FROM schema_fingerprint").fetchall()
        assert len(crc_one) == len(crc_two) == 1 and crc_one != crc_two

        with pytest.raises(MigrationError):
            apply_migrations(conn, db_path, [first, Migration("0002_b.sql", "CREATE TABLE c(z);")])
        assert conn.execute("SELECT crc FROM schema_fingerprint").fetchall() == crc_two

    def test_list_applies_in_order(self, conn: apsw.Connection, db_path: Path) -> None:
        """A list of migrations applies in order, each seeing the ones before it."""
        migrations = [
            Migration("0001_a.sql", "CREATE TABLE a(x); INSERT INTO a VALUES (1);"),
            Migration("0002_b.sql", "CREATE TABLE b(y); INSERT INTO b SELECT x + 1 FROM a;"),
            Migration("0003_c.sql", "ALTER TABLE b ADD COLUMN z TEXT DEFAULT 'z';"),
        ]

        applied = apply_migrations(conn, db_path, migrations)

        assert applied == ["0001_a.sql", "0002_b.sql", "0003_c.sql"]
        assert conn.execute("SELECT y, z FROM b").fetchall() == [(2, "z")]
        assert recorded(conn) == [(m.name, m.checksum) for m in migrations]

    def test_only_pending_ones_are_applied(self, conn: apsw.Connection, db_path: Path) -> None:
        """With 0001 applied, a later run applies only the new 0002."""
        first = Migration("0001_a.sql", "CREATE TABLE a(x);")
        second = Migration("0002_b.sql", "CREATE TABLE b(y);")
        apply_migrations(conn, db_path, [first])

        assert apply_migrations(conn, db_path, [first, second]) == ["0002_b.sql"]
        assert {"a", "b"} <= tables(conn)

    def test_failed_migration_is_rolled_back(self, conn: apsw.Connection, db_path: Path) -> None:
        """A migration that fails leaves no trace; the ones before it stay applied."""
        migrations = [
            Migration("0001_a.sql", "CREATE TABLE a(x);"),
            Migration("0002_b.sql", "CREATE TABLE b(y); INSERT INTO missing VALUES (1);"),
        ]

        with pytest.raises(apsw.SQLError):
            apply_migrations(conn, db_path, migrations)

        assert "a" in tables(conn)
        assert "b" not in tables(conn)
        assert [name for name, _ in recorded(conn)] == ["0001_a.sql"]

    def test_statements_after_a_row_returning_one_run(
        self, conn: apsw.Connection, db_path: Path
    ) -> None:
        """Every statement of a migration runs, even after one that returns rows."""
        migration = Migration(
            "0001_a.sql", "CREATE TABLE a(x); PRAGMA user_version; CREATE TABLE b(y);"
        )

        apply_migrations(conn, db_path, [migration])

        assert {"a", "b"} <= tables(conn)


class TestUnreadableColumn:
    def test_0005_marks_the_rows_whose_file_could_not_be_read(
            self, conn: apsw.Connection, db_path: Path) -> None:
        """Migration 0005 turns the old 'cannot read the file' errors into the
        `unreadable` column; other rows are 0."""
        apply_migrations(conn, db_path, [m for m in known_migrations() if m.name < "0005"])
        for story_id, errors in (("1_story_locked", '["cannot read the file (Permission '
                                                    'denied)"]'),
                                 ("2_story_bad", '["retry_count: expected an integer"]'),
                                 ("3_story_fine", None)):
            conn.execute("INSERT INTO pipeline_items(id, stage) VALUES (?, '1_backlog')",
                         (story_id,))
            conn.execute("INSERT INTO story_extras(id, errors) VALUES (?, ?)",
                         (story_id, errors))
        assert "0005_unreadable.sql" in apply_migrations(conn, db_path)
        assert conn.execute("SELECT id, unreadable FROM story_extras ORDER BY id").fetchall() \
            == [("1_story_locked", 1), ("2_story_bad", 0), ("3_story_fine", 0)]

    def test_startup_reads_the_column_not_the_wording(self, conn: apsw.Connection,
                                                      db_path: Path) -> None:
        """What startup re-reads as unreadable comes from the column, whatever the
        error's wording."""
        from pipelined.store.load import read_unreadable

        apply_migrations(conn, db_path)
        conn.execute("INSERT INTO pipeline_items(id, stage) VALUES ('4_story_x', '1_backlog')")
        conn.execute("INSERT INTO story_extras(id, errors, unreadable) VALUES "
                     "('4_story_x', '[\"reworded: no access\"]', 1)")
        conn.execute("INSERT INTO pipeline_items(id, stage) VALUES ('5_story_y', '1_backlog')")
        conn.execute("INSERT INTO story_extras(id, errors, unreadable) VALUES "
                     "('5_story_y', '[\"cannot read the file (old text)\"]', 0)")
        assert read_unreadable(conn) == {"4_story_x"}
