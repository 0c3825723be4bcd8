"""Fixtures of the state contract suites: one test body, every implementation.

Memory backends run on a FakeClock; Redis keeps its own time, so the ``advance``
helper really sleeps there (short, bounded TTLs).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sipmesh.state.clock import FakeClock
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.kv_redis import RedisKV
from sipmesh.state.location import LocationStore
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.location_redis import RedisLocationStore
from sipmesh.state.redis_common import make_redis_client
from sipmesh.state.testing import KVCase, LocCase

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def kv_case(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[KVCase]:
    opened: list[KVStore] = []
    if request.param == "memory":
        clock = FakeClock()
        store: KVStore = MemoryKV(prefix=unique_prefix, clock=clock)

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        def peer() -> KVStore:
            return store

    else:
        url = request.getfixturevalue("redis_url")

        def peer() -> KVStore:
            s = RedisKV(make_redis_client(url), prefix=unique_prefix)
            opened.append(s)
            return s

        store = peer()

        async def advance(seconds: float) -> None:
            await asyncio.sleep(seconds)

    yield KVCase(request.param, store, advance, peer)
    for s in opened:
        for key in await s.scan():
            await s.delete(key)
        await s.close()


@pytest.fixture(params=BACKENDS)
async def loc_case(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[LocCase]:
    clock = FakeClock()
    opened: list[RedisLocationStore] = []
    if request.param == "memory":
        store: LocationStore = MemoryLocationStore(prefix=unique_prefix, clock=clock)

        def peer() -> LocationStore:
            return store

    else:
        url = request.getfixturevalue("redis_url")

        def peer() -> LocationStore:
            s = RedisLocationStore(make_redis_client(url), prefix=unique_prefix, clock=clock)
            opened.append(s)
            return s

        store = peer()
    yield LocCase(request.param, store, clock, peer)
    if opened:
        client = make_redis_client(request.getfixturevalue("redis_url"))
        keys = [k async for k in client.scan_iter(match=f"{unique_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        for s in opened:
            await s.close()
