"""Database contract on SQLite (a temporary file) and PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest

from sipmesh.state.db import Database
from sipmesh.state.db_postgres import PostgresDatabase
from sipmesh.state.db_sqlite import SQLiteDatabase, sqlite_path, translate_placeholders
from sipmesh.state.errors import BadStateURL, ConstraintViolation, StateUnavailable
from sipmesh.state.location import Binding
from sipmesh.state.location_rows import INSERT_SQL, binding_from_row, binding_to_row, insert_args
from sipmesh.state.schema import (
    KAMAILIO_TABLE_VERSIONS,
    SCHEMA_ROW,
    init_schema,
    latest_version,
    migrate,
    schema_version,
)
from sipmesh.state.testing import PrivatePostgres, free_port

ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=ENGINES)
async def db(
    request: pytest.FixtureRequest, tmp_path: Path, session_id: str
) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        handle: Database = await SQLiteDatabase.open(str(tmp_path / "sipmesh.db"))
        yield handle
        await handle.close()
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    name = f"sipmesh_{session_id}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = admin_url.rsplit("/", 1)[0]
    handle = await PostgresDatabase.open(f"{base}/{name}")
    try:
        yield handle
    finally:
        await handle.close()
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def columns(db: Database, table: str) -> list[str]:
    if db.dialect == "postgresql":
        rows = await db.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = $1 AND table_schema = current_schema() ORDER BY ordinal_position",
            table,
        )
        return [r["column_name"] for r in rows]
    rows = await db.fetch(f"PRAGMA table_info({table})")
    return [r["name"] for r in rows]


async def tables(db: Database) -> list[str]:
    if db.dialect == "postgresql":
        rows = await db.fetch(
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY 1"
        )
    else:
        rows = await db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        )
    return [r["name"] for r in rows]


async def snapshot(db: Database) -> dict[str, object]:
    out: dict[str, object] = {}
    for t in await tables(db):
        out[t] = await columns(db, t)
    out["versions"] = await db.fetch(
        "SELECT table_name, table_version FROM version ORDER BY table_name"
    )
    return out


async def test_schema_init_and_migrate_idempotent(db: Database) -> None:
    assert await schema_version(db) == 0
    assert await migrate(db) == list(range(1, latest_version() + 1))
    first = await snapshot(db)
    assert await migrate(db) == []
    assert await init_schema(db) == latest_version()
    assert await snapshot(db) == first
    versions = {
        r["table_name"]: r["table_version"] for r in await db.fetch("SELECT * FROM version")
    }
    assert versions[SCHEMA_ROW] == latest_version()
    for table, version in KAMAILIO_TABLE_VERSIONS.items():
        assert versions[table] == version
    expected = {
        "subscriber",
        "location",
        "aliases",
        "dbaliases",
        "speed_dial",
        "domain",
        "domain_attrs",
        "address",
        "dispatcher",
        "lcr_gw",
        "lcr_rule",
        "lcr_rule_target",
        "dialplan",
        "acc",
        "missed_calls",
        "presentity",
        "active_watchers",
        "watchers",
        "xcap",
        "pua",
        "silo",
        "sip_trace",
        "version",
        "cdrs",
        "events_processed",
    }
    assert expected <= set(await tables(db))


async def test_kamailio_column_names(db: Database) -> None:
    await init_schema(db)
    assert await columns(db, "subscriber") == [
        "id",
        "username",
        "domain",
        "password",
        "ha1",
        "ha1b",
    ]
    loc = await columns(db, "location")
    assert loc[-3:] == ["edge_id", "flow_id", "attrs"]  # sipmesh's additions (schema 3)
    assert loc[1:-3] == [
        "ruid", "username", "domain", "contact", "received", "path", "expires", "q",
        "callid", "cseq", "last_modified", "flags", "cflags", "user_agent", "socket",
        "methods", "instance", "reg_id", "server_id", "connection_id", "keepalive", "partition",
    ]  # fmt: skip
    assert await columns(db, "aliases") == loc[:-3]
    assert await columns(db, "dbaliases") == [
        "id", "alias_username", "alias_domain", "username", "domain",
    ]  # fmt: skip
    assert await columns(db, "address") == ["id", "grp", "ip_addr", "mask", "port", "tag"]
    assert await columns(db, "dispatcher") == [
        "id", "setid", "destination", "flags", "priority", "attrs", "description",
    ]  # fmt: skip
    acc = await columns(db, "acc")
    assert acc == await columns(db, "missed_calls")
    assert acc[1:8] == ["method", "from_tag", "to_tag", "callid", "sip_code", "sip_reason", "time"]
    assert acc[8:] == ["src_user", "src_domain", "src_ip", "dst_ouser", "dst_user", "dst_domain"]
    assert await columns(db, "version") == ["id", "table_name", "table_version"]
    cdrs = set(await columns(db, "cdrs"))
    assert {"call_id", "caller", "callee", "start_time", "answer_time", "end_time"} <= cdrs
    assert {"duration", "status", "src_ip", "end_reason"} <= cdrs


async def test_crud_with_numbered_placeholders(db: Database) -> None:
    await init_schema(db)
    n = await db.execute(
        "INSERT INTO subscriber (username, domain, password, ha1) VALUES ($1, $2, $3, $4)",
        "alice",
        "example.com",
        "",
        "h1",
    )
    assert n == 1
    await db.executemany(
        "INSERT INTO subscriber (username, domain, ha1) VALUES ($1, $2, $3)",
        [("bob", "example.com", "h2"), ("carol", "example.org", "h3")],
    )
    rows = await db.fetch(
        "SELECT username, ha1 FROM subscriber WHERE domain = $1 ORDER BY username", "example.com"
    )
    assert rows == [{"username": "alice", "ha1": "h1"}, {"username": "bob", "ha1": "h2"}]
    # The same parameter used twice, and a literal '$1' that must stay text.
    row = await db.fetchrow(
        "SELECT username, '$1' AS lit FROM subscriber WHERE username = $1 OR domain = $1", "carol"
    )
    assert row == {"username": "carol", "lit": "$1"}
    assert await db.fetchrow("SELECT * FROM subscriber WHERE username = $1", "nobody") is None
    assert await db.fetchval("SELECT COUNT(*) FROM subscriber") == 3
    assert await db.fetchval("SELECT ha1 FROM subscriber WHERE username = $1", "nobody") is None
    assert (
        await db.execute("UPDATE subscriber SET ha1 = $1 WHERE domain = $2", "x", "example.com")
        == 2
    )
    assert await db.execute("DELETE FROM subscriber WHERE username = $1", "bob") == 1
    with pytest.raises(ConstraintViolation):
        await db.execute(
            "INSERT INTO subscriber (username, domain) VALUES ($1, $2)", "alice", "example.com"
        )
    inserted = await db.execute(
        "INSERT INTO subscriber (username, domain) VALUES ($1, $2) "
        "ON CONFLICT (username, domain) DO NOTHING",
        "alice",
        "example.com",
    )
    assert inserted == 0


async def test_datetime_and_bytes_round_trip(db: Database) -> None:
    await init_schema(db)
    when = datetime(2026, 1, 2, 3, 4, 5, 678000)
    aware = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    await db.execute(
        "INSERT INTO acc (method, callid, sip_code, time) VALUES ($1, $2, $3, $4)",
        "INVITE",
        "c1",
        "200",
        when,
    )
    await db.execute(
        "INSERT INTO acc (method, callid, sip_code, time) VALUES ($1, $2, $3, $4)",
        "BYE",
        "c1",
        "200",
        aware,
    )
    times = [r["time"] for r in await db.fetch("SELECT time FROM acc ORDER BY id")]
    assert times == [when, datetime(2026, 1, 2, 3, 4, 5)]
    assert all(isinstance(t, datetime) and t.tzinfo is None for t in times)
    body = bytes(range(256))
    await db.execute(
        "INSERT INTO silo (src_addr, dst_addr, username, domain, body) VALUES ($1, $2, $3, $4, $5)",
        "sip:a@x",
        "sip:b@x",
        "b",
        "x",
        body,
    )
    assert await db.fetchval("SELECT body FROM silo WHERE username = $1", "b") == body
    default = await db.fetchval("SELECT last_modified FROM domain WHERE 1 = 0")
    assert default is None
    await db.execute("INSERT INTO domain (domain) VALUES ($1)", "example.com")
    assert await db.fetchval("SELECT last_modified FROM domain") == datetime(2000, 1, 1, 0, 0, 1)
    now = datetime.now(UTC).replace(tzinfo=None)
    await db.execute(
        "INSERT INTO events_processed (consumer, event_id, processed_at) VALUES ($1, $2, $3)",
        "acc",
        "e1",
        now,
    )
    assert await db.fetchval("SELECT processed_at FROM events_processed") == now


async def test_transaction_commits_or_rolls_back(db: Database) -> None:
    await init_schema(db)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO domain (domain) VALUES ($1)", "a.example")
        assert await tx.fetchval("SELECT COUNT(*) FROM domain") == 1
    assert await db.fetchval("SELECT COUNT(*) FROM domain") == 1

    async def insert_then_fail() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO domain (domain) VALUES ($1)", "b.example")
            raise RuntimeError("boom")

    async def insert_then_duplicate() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO domain (domain) VALUES ($1)", "c.example")
            await tx.execute("INSERT INTO domain (domain) VALUES ($1)", "a.example")

    with pytest.raises(RuntimeError, match="boom"):
        await insert_then_fail()
    with pytest.raises(ConstraintViolation):
        await insert_then_duplicate()
    # Nothing half-written: only the committed row is there.
    assert await db.fetch("SELECT domain FROM domain") == [{"domain": "a.example"}]


async def test_concurrent_transactions_are_isolated(db: Database) -> None:
    await init_schema(db)
    await db.execute("INSERT INTO version (table_name, table_version) VALUES ($1, $2)", "ctr", 0)

    async def bump() -> None:
        for _ in range(10):
            async with db.transaction() as tx:
                if tx.dialect == "postgresql":
                    await tx.execute(
                        "SELECT 1 FROM version WHERE table_name = $1 FOR UPDATE", "ctr"
                    )
                v = await tx.fetchval(
                    "SELECT table_version FROM version WHERE table_name = $1", "ctr"
                )
                await asyncio.sleep(0)
                await tx.execute(
                    "UPDATE version SET table_version = $1 WHERE table_name = $2", v + 1, "ctr"
                )

    await asyncio.gather(bump(), bump(), bump())
    assert await db.fetchval("SELECT table_version FROM version WHERE table_name = $1", "ctr") == 30


async def test_health(db: Database) -> None:
    await db.ping()
    assert db.healthy


def test_placeholder_translation() -> None:
    assert translate_placeholders("SELECT $1, $12") == "SELECT ?1, ?12"
    assert translate_placeholders("SELECT '$1' || $2") == "SELECT '$1' || ?2"
    assert translate_placeholders("SELECT 'it''s $1', \"$2\" -- $3\n, $4") == (
        "SELECT 'it''s $1', \"$2\" -- $3\n, ?4"
    )
    assert translate_placeholders("SELECT $x, $") == "SELECT $x, $"


def test_sqlite_urls() -> None:
    assert sqlite_path("sqlite:///var/sipmesh.db") == "var/sipmesh.db"
    assert sqlite_path("sqlite:////var/lib/sipmesh.db") == "/var/lib/sipmesh.db"
    assert sqlite_path("sqlite://:memory:") == ":memory:"
    with pytest.raises(BadStateURL):
        sqlite_path("sqlite://host/x.db")
    with pytest.raises(BadStateURL):
        sqlite_path("sqlite://")


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_unavailable_then_reconnects() -> None:
    cluster = PrivatePostgres(Path("/tmp") / f"sipmesh-pg-{secrets.token_hex(4)}", free_port())
    cluster.init()
    cluster.start()
    try:
        db = await PostgresDatabase.open(cluster.url, op_timeout=1.5)
        try:
            await init_schema(db)
            await db.execute("INSERT INTO domain (domain) VALUES ($1)", "before.example")
            cluster.stop()
            with pytest.raises(StateUnavailable):
                await db.fetchval("SELECT COUNT(*) FROM domain")
            with pytest.raises(StateUnavailable):
                await db.ping()
            assert not db.healthy
            with pytest.raises(StateUnavailable):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO domain (domain) VALUES ($1)", "down.example")
            cluster.start()
            # The same pool reconnects: the committed row survived, the failed one is absent.
            assert await db.fetch("SELECT domain FROM domain") == [{"domain": "before.example"}]
            await db.execute("INSERT INTO domain (domain) VALUES ($1)", "after.example")
            assert await db.fetchval("SELECT COUNT(*) FROM domain") == 2
            assert db.healthy
        finally:
            await db.close()
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir.parent, ignore_errors=True)


async def test_upgrade_from_an_older_schema(db: Database) -> None:
    assert await migrate(db, target=2) == [1, 2]
    assert await schema_version(db) == 2
    assert "edge_id" not in await columns(db, "location")
    await db.execute(
        "INSERT INTO subscriber (username, domain, ha1) VALUES ($1, $2, $3)", "u", "d", "h"
    )
    assert await migrate(db) == list(range(3, latest_version() + 1))
    assert await schema_version(db) == latest_version()
    assert "edge_id" in await columns(db, "location")
    # Data written before the upgrade is still there; a second run is a no-op.
    assert await db.fetchval("SELECT ha1 FROM subscriber WHERE username = $1", "u") == "h"
    assert await migrate(db) == []


async def test_location_rows_round_trip(db: Database) -> None:
    await init_schema(db)
    b = Binding(
        aor="sip:alice@example.com",
        contact="sip:alice@192.0.2.1:5060;ob",
        expires_at=1_800_000_123.5,
        q=None,
        call_id="cid",
        cseq=7,
        path=("<sip:edge1.example.com;lr>", '"x,y" <sip:p2;lr>'),
        received="sip:198.51.100.1:5060",
        transport="tls",
        socket="tls:10.0.0.1:5061",
        edge_id="edge-1",
        flow_id="f1",
        instance="<urn:uuid:1>",
        reg_id=1,
        user_agent="ua",
        methods=8191,
        flags=1,
        cflags=2,
        last_modified=1_800_000_000.25,
        ruid="r1",
        attrs={"a": 1},
    )
    row = binding_to_row(b, username="alice", domain="example.com")
    await db.execute(INSERT_SQL, *insert_args(row))
    stored = await db.fetchrow("SELECT * FROM location WHERE ruid = $1", "r1")
    assert stored is not None
    assert stored["username"] == "alice"
    assert stored["q"] == -1.0
    assert binding_from_row(stored, aor=b.aor) == b
    with_q = replace(b, q=0.5, reg_id=None, path=(), ruid="r2", contact="sip:x@h")
    await db.execute(
        INSERT_SQL, *insert_args(binding_to_row(with_q, username="alice", domain=None))
    )
    stored2 = await db.fetchrow("SELECT * FROM location WHERE ruid = $1", "r2")
    assert stored2 is not None
    assert binding_from_row(stored2, aor=b.aor) == with_q
