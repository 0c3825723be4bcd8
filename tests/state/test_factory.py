"""Opening backends from the configuration's URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipmesh.state.bus import EventBus
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.bus_nats import NatsBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.db_postgres import PostgresDatabase
from sipmesh.state.db_sqlite import SQLiteDatabase
from sipmesh.state.errors import BadStateURL, StateUnavailable
from sipmesh.state.factory import check_url, open_bus, open_db, open_kv, open_location
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.kv_redis import RedisKV
from sipmesh.state.location import LocationStore
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.location_redis import RedisLocationStore
from sipmesh.state.schema import init_schema, latest_version
from sipmesh.state.testing import free_port


async def test_memory_defaults(tmp_path: Path) -> None:
    clock = FakeClock()
    kv = open_kv("memory", prefix="p:", clock=clock)
    assert isinstance(kv, MemoryKV)
    assert isinstance(kv, KVStore)
    await kv.set("a", b"1", ttl=10)
    clock.advance(11)
    assert await kv.get("a") is None
    loc = open_location("memory", clock=clock)
    assert isinstance(loc, MemoryLocationStore)
    assert isinstance(loc, LocationStore)
    bus = await open_bus("memory", prefix="x")
    assert isinstance(bus, MemoryBus)
    assert isinstance(bus, EventBus)
    await bus.close()
    db = await open_db(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(db, SQLiteDatabase)
    assert isinstance(db, Database)
    assert await init_schema(db) == latest_version()
    await db.close()
    assert (tmp_path / "x.db").exists()


@pytest.mark.redis
async def test_redis_urls(redis_url: str, unique_prefix: str) -> None:
    kv = open_kv(redis_url, prefix=unique_prefix)
    loc = open_location(redis_url, prefix=unique_prefix)
    assert isinstance(kv, RedisKV)
    assert isinstance(loc, RedisLocationStore)
    try:
        await kv.ping()
        await loc.ping()
        await kv.set("k", b"v", ttl=5)
        assert await kv.get("k") == b"v"
        await kv.delete("k")
    finally:
        await kv.close()
        await loc.close()


@pytest.mark.postgres
async def test_postgres_url(postgres_url: str) -> None:
    db = await open_db(postgres_url)
    assert isinstance(db, PostgresDatabase)
    try:
        assert await db.fetchval("SELECT $1::int + 1", 41) == 42
    finally:
        await db.close()


@pytest.mark.nats
async def test_nats_url(nats_url: str, unique_prefix: str) -> None:
    bus = await open_bus(nats_url, prefix=unique_prefix)
    assert isinstance(bus, NatsBus)
    try:
        await bus.ping()
    finally:
        await bus.close()


async def test_down_servers_raise_state_unavailable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StateUnavailable):
        await open_bus(f"nats://127.0.0.1:{port}", op_timeout=0.5)
    with pytest.raises(StateUnavailable):
        await open_db(f"postgresql://postgres@127.0.0.1:{port}/x", op_timeout=0.5)
    kv = open_kv(f"redis://127.0.0.1:{port}/0", op_timeout=0.5)
    with pytest.raises(StateUnavailable):
        await kv.get("a")
    assert not kv.healthy
    await kv.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("mysql://x/y", "db"),
        ("redis://h", "db"),
        ("nats://h", "state"),
        ("", "bus"),
        ("memory", "db"),
        ("kafka://h", "bus"),
    ],
)
def test_bad_urls(url: str, kind: str) -> None:
    with pytest.raises(BadStateURL):
        check_url(url, kind)


async def test_bad_url_at_open() -> None:
    with pytest.raises(BadStateURL):
        open_kv("postgresql://x/y")
    with pytest.raises(BadStateURL):
        await open_db("sqlite://")
