"""Schema migrations: plain SQL files applied in order, each in a transaction.

The files live in the top-level `migrations/` folder of the source tree and
ship inside the wheel as `pipelined/migrations/`. Each applied file is recorded
with a SHA-256 checksum; a database holding a migration this code does not
know (a newer pipelined wrote it) or one whose text changed is refused.
"""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import apsw

from pipelined.errors import MigrationError
from pipelined.store.connection import transaction

__all__ = ["Migration", "apply_migrations", "known_migrations", "migrations_folder"]

_NAME = re.compile(r"^[0-9]{4}_[a-z0-9_]+\.sql$")


class Migration(NamedTuple):
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        import hashlib  # noqa: PLC0415 - a restart verifies by CRC-32 and seldom needs it

        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def _fingerprint(applied: dict[str, str], by_name: dict[str, Migration]) -> int:
    """CRC-32 over each applied migration's name, recorded checksum and current text."""
    crc = 0
    for name in sorted(applied):
        crc = zlib.crc32(f"{name}\0{applied[name]}\0{by_name[name].sql}\0".encode(), crc)
    return crc


def migrations_folder() -> Path:
    """The packaged folder in a wheel; the top-level folder in a source checkout."""
    packaged = Path(__file__).resolve().parents[1] / "migrations"  # inside the wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def known_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or migrations_folder()
    files = sorted(p for p in folder.glob("*.sql") if _NAME.match(p.name))
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in files]


def apply_migrations(
    conn: apsw.Connection, db_path: Path, migrations: list[Migration] | None = None
) -> list[str]:
    """Apply pending migrations in order; return the names applied.

    Each applied migration's recorded SHA-256 is checked against its text. A
    CRC-32 over every name, recorded checksum and text, stored once that check
    has passed, lets a restart with nothing changed skip the hashing (and
    hashlib's import, a few ms of every start): any change to a text or a
    recorded checksum changes the CRC, and the full check runs again.
    """
    migrations = known_migrations() if migrations is None else migrations
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations("
        "name TEXT PRIMARY KEY, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_fingerprint("
        "singleton INTEGER PRIMARY KEY CHECK (singleton = 1), crc INTEGER NOT NULL)"
    )
    applied = {str(name): str(checksum) for name, checksum in
               conn.execute("SELECT name, checksum FROM schema_migrations")}
    by_name = {m.name: m for m in migrations}
    unknown = sorted(set(applied) - set(by_name))
    if unknown:
        raise MigrationError(
            db_path, f"it has migration {unknown[-1]} that this pipelined does not know "
            "(written by a newer version); upgrade pipelined"
        )
    stored = conn.execute("SELECT crc FROM schema_fingerprint").fetchone()
    if set(applied) == set(by_name) and stored is not None and stored[0] == _fingerprint(
            applied, by_name):
        return []  # every migration applied, and nothing changed since the last full check
    for name, checksum in applied.items():
        if by_name[name].checksum != checksum:
            raise MigrationError(db_path, f"migration {name} changed since it was applied")
    done: list[str] = []
    for migration in migrations:
        if migration.name in applied:
            continue
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        checksum = migration.checksum
        with transaction(conn):  # one transaction per migration
            # apsw runs a multi-statement script as its rows are consumed.
            conn.execute(migration.sql).fetchall()
            conn.execute(
                "INSERT INTO schema_migrations(name, checksum, applied_at) VALUES (?, ?, ?)",
                (migration.name, checksum, now),
            )
        done.append(migration.name)
        applied[migration.name] = checksum
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO schema_fingerprint(singleton, crc) VALUES (1, ?)",
                     (_fingerprint(applied, by_name),))
    return done
