"""Fixtures of the cluster tests: per-test backends on the real servers.

sipmesh writes every Redis key under the fixed prefix "sipmesh:" and every NATS
subject under "sipmesh." (sipmesh/runtime/backends.py), so a per-test prefix cannot
be passed to the processes. Instead each test gets its own PostgreSQL database, its
own Redis logical database (claimed with a lock key in database 0), and the JetStream
streams it created are deleted at the end.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cluster.harness import Backends, Cluster

REDIS_DATABASES = range(1, 16)
LOCK_TTL = 900  # seconds; a crashed run's claim lapses by itself


def _redis_db_url(url: str, index: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{index}", parts.query, parts.fragment))


@pytest.fixture
def cluster_postgres(postgres_admin_url: str) -> Iterator[str]:
    import asyncpg

    name = f"sipmesh_cluster_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(postgres_admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _clear_sipmesh_keys(client: object) -> None:
    import redis

    assert isinstance(client, redis.Redis)
    for key in client.scan_iter(match="sipmesh:*", count=1000):
        client.delete(key)


@pytest.fixture
def cluster_redis(redis_url: str, unique_prefix: str) -> Iterator[str]:
    import redis

    lock_client = redis.Redis.from_url(_redis_db_url(redis_url, 0))
    claimed = None
    try:
        for index in REDIS_DATABASES:
            if lock_client.set(f"sipmesh-harness:db:{index}", unique_prefix, nx=True, ex=LOCK_TTL):
                claimed = index
                break
        if claimed is None:
            raise RuntimeError("every Redis database 1-15 is claimed by another cluster test")
        url = _redis_db_url(redis_url, claimed)
        client = redis.Redis.from_url(url)
        try:
            _clear_sipmesh_keys(client)  # leftovers of a crashed run that held this claim
            yield url
            _clear_sipmesh_keys(client)
        finally:
            client.close()
    finally:
        if claimed is not None:
            lock_client.delete(f"sipmesh-harness:db:{claimed}")
        lock_client.close()


async def _stream_names(nats_url: str) -> set[str]:
    import nats

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        return {info.config.name for info in await js.streams_info() if info.config.name}
    finally:
        await nc.close()


async def _delete_streams(nats_url: str, names: set[str]) -> None:
    import nats

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for name in names:
            await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.fixture
def cluster_nats(nats_url: str) -> Iterator[str]:
    before = asyncio.run(_stream_names(nats_url))
    yield nats_url
    created = {n for n in asyncio.run(_stream_names(nats_url)) - before if n.startswith("sipmesh")}
    asyncio.run(_delete_streams(nats_url, created))


@pytest.fixture
def cluster(
    tmp_path: Path, cluster_postgres: str, cluster_redis: str, cluster_nats: str
) -> Iterator[Cluster]:
    """The compose topology planned on loopback (not started: the test starts it)."""
    made = Cluster(
        workdir=tmp_path / "cluster",
        backends=Backends(state=cluster_redis, db=cluster_postgres, bus=cluster_nats),
    )
    made.plan()
    try:
        yield made
    finally:
        made.stop()
