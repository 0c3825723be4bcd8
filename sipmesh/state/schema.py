"""The table schema: Kamailio's tables and sipmesh's own, created and upgraded in place.

``migrate(db)`` applies, in one transaction, every numbered SQL file of ``sql/`` newer
than the schema version recorded in the ``version`` table (row ``sipmesh_schema``),
then records Kamailio's per-table versions there as kamdbctl does. Running it again
changes nothing. On PostgreSQL an advisory lock serialises concurrent migrators (two
services starting at once). ``init_schema`` is the same operation under the name
``sipmesh db init`` uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from sipmesh.state.db import Database, Dialect, Executor

SCHEMA_ROW = "sipmesh_schema"
# An arbitrary constant identifying sipmesh's migration lock (pg_advisory_xact_lock).
_PG_LOCK_KEY = 0x5195E54

_TYPES: dict[Dialect, dict[str, str]] = {
    "postgresql": {
        "SERIAL": "SERIAL PRIMARY KEY NOT NULL",
        "DATETIME": "TIMESTAMP WITHOUT TIME ZONE",
        "BLOB": "BYTEA",
    },
    "sqlite": {
        "SERIAL": "INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL",
        "DATETIME": "DATETIME",
        "BLOB": "BLOB",
    },
}

#: Kamailio's table versions (the values its modules check in ``version``).
KAMAILIO_TABLE_VERSIONS: dict[str, int] = {
    "version": 1,
    "subscriber": 7,
    "location": 9,
    "location_attrs": 1,
    "aliases": 9,
    "dbaliases": 1,
    "speed_dial": 2,
    "domain": 2,
    "domain_attrs": 1,
    "address": 6,
    "trusted": 6,
    "dispatcher": 4,
    "lcr_gw": 3,
    "lcr_rule_target": 1,
    "lcr_rule": 3,
    "dialplan": 2,
    "acc": 5,
    "acc_cdrs": 2,
    "missed_calls": 4,
    "presentity": 5,
    "active_watchers": 12,
    "watchers": 3,
    "xcap": 4,
    "pua": 7,
    "silo": 8,
    "sip_trace": 4,
}

#: sipmesh's own tables and their versions.
SIPMESH_TABLE_VERSIONS: dict[str, int] = {"cdrs": 1, "events_processed": 1}

# Kamailio checks location's version; sipmesh's extra location columns (schema 3) do
# not change it, so Kamailio tools keep working on the same database.

_VERSION_DDL = """CREATE TABLE IF NOT EXISTS version (
    id {SERIAL},
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The numbered SQL files of sipmesh/state/sql, in order (NNN_name.sql)."""
    found: list[Migration] = []
    for entry in resources.files("sipmesh.state").joinpath("sql").iterdir():
        match = re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema migrations are not numbered 1..n: {versions}")
    return found


def render(sql: str, dialect: Dialect) -> list[str]:
    """The statements of one SQL file for ``dialect`` (type tokens replaced)."""
    types = _TYPES[dialect]
    text = re.sub(r"\{(SERIAL|DATETIME|BLOB)\}", lambda m: types[m[1]], sql)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    statements = re.split(r";\s*$", "\n".join(lines), flags=re.M)
    return [s.strip() for s in statements if s.strip()]


async def _set_version(tx: Executor, table: str, version: int) -> None:
    await tx.execute(
        "INSERT INTO version (table_name, table_version) VALUES ($1, $2) "
        "ON CONFLICT (table_name) DO UPDATE SET table_version = EXCLUDED.table_version "
        "WHERE version.table_version <> EXCLUDED.table_version",
        table,
        version,
    )


async def schema_version(db: Database) -> int:
    """The applied sipmesh schema version (0 for an empty database)."""
    exists = await db.fetchval(
        "SELECT COUNT(*) FROM information_schema.tables "
        "WHERE table_name = 'version' AND table_schema = current_schema()"
        if db.dialect == "postgresql"
        else "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'version'"
    )
    if not exists:
        return 0
    value = await db.fetchval("SELECT table_version FROM version WHERE table_name = $1", SCHEMA_ROW)
    return int(value or 0)


async def migrate(db: Database, *, target: int | None = None) -> list[int]:
    """Bring the schema to ``target`` (default: the latest version).

    Returns the versions applied, [] when the schema was already there. Never goes
    down: a database newer than ``target`` is left as it is.
    """
    migrations = load_migrations()
    if target is not None:
        migrations = [m for m in migrations if m.version <= target]
    applied: list[int] = []
    async with db.transaction() as tx:
        if db.dialect == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK_KEY)
        for stmt in render(_VERSION_DDL, db.dialect):
            await tx.execute(stmt)
        current = int(
            await tx.fetchval("SELECT table_version FROM version WHERE table_name = $1", SCHEMA_ROW)
            or 0
        )
        for migration in migrations:
            if migration.version <= current:
                continue
            for stmt in render(migration.sql, db.dialect):
                await tx.execute(stmt)
            applied.append(migration.version)
        if applied:
            for table, version in {**KAMAILIO_TABLE_VERSIONS, **SIPMESH_TABLE_VERSIONS}.items():
                await _set_version(tx, table, version)
            await _set_version(tx, SCHEMA_ROW, migrations[-1].version)
    return applied


async def init_schema(db: Database) -> int:
    """Create every table that is missing (``sipmesh db init``); returns the schema version."""
    await migrate(db)
    return await schema_version(db)


def latest_version() -> int:
    return load_migrations()[-1].version
