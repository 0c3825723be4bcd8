"""Fixtures of the accounting tests: a fresh database per test, the bus."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database
from sipmesh.state.factory import open_bus
from tests.accounting.helpers import migrated


@pytest.fixture
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone, dropped at the end."""
    name = f"acc_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(postgres_admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["embedded", "servers"])
def backend_urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(database URL, bus URL): SQLite + in-process bus, or PostgreSQL + NATS JetStream."""
    if request.param == "embedded":
        return f"sqlite:///{tmp_path / 'acc.db'}", "memory"
    return request.getfixturevalue("pg_url"), request.getfixturevalue("nats_url")


@pytest.fixture
async def backends(
    backend_urls: tuple[str, str], unique_prefix: str
) -> AsyncIterator[tuple[Database, EventBus]]:
    db = await migrated(backend_urls[0])
    bus = await open_bus(backend_urls[1], prefix=unique_prefix)
    try:
        yield db, bus
    finally:
        await bus.delete_stream("events")
        await bus.close()
        await db.close()
