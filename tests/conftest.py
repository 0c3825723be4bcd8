"""Fixtures shared by the whole suite: the real PostgreSQL, Redis and NATS servers.

The test command (scripts/test) makes sure the servers run; these fixtures give every
test session its own PostgreSQL database and every test its own key and subject
prefix, and remove what they created. Tests never skip for want of a server: a
missing server is a failure of the environment that must be seen.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_NATS = "nats://127.0.0.1:4222"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def session_id() -> str:
    """A short id unique to this test session (keys, subjects, databases)."""
    return f"t{os.getpid()}{secrets.token_hex(3)}"


@pytest.fixture
def unique_prefix(session_id: str) -> str:
    """A key/subject prefix unique to one test."""
    return f"{session_id}x{secrets.token_hex(3)}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    return os.environ.get("SIPMESH_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url: str, session_id: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import asyncpg

    name = f"sipmesh_{session_id}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(postgres_admin_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(session_id: str) -> Iterator[str]:
    """The Redis server; what this session wrote is removed at the end.

    That is every key under the session id, and the keys that real `sipmesh serve`
    processes of the end-to-end tests wrote under the default namespace (those that
    were not there before the session: another installation's keys are left alone).
    """
    import redis

    url = os.environ.get("SIPMESH_TEST_REDIS_URL", DEFAULT_REDIS)
    client = redis.Redis.from_url(url)
    try:
        before = set(client.scan_iter(match="sipmesh:*", count=1000))
    finally:
        client.close()
    yield url
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{session_id}*", count=1000):
            client.delete(key)
        for key in client.scan_iter(match="sipmesh:*", count=1000):
            if key not in before:
                client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The NATS server with JetStream; streams are named after the test's prefix."""
    return os.environ.get("SIPMESH_TEST_NATS_URL", DEFAULT_NATS)
