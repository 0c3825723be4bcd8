"""The shared ban list on the memory store and on the real Redis."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from sipmesh.bans import BanList
from sipmesh.state.clock import FakeClock
from sipmesh.state.factory import open_kv
from sipmesh.state.kv import KVStore


@pytest.fixture(params=["memory", "redis"])
async def kv(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[KVStore]:
    if request.param == "memory":
        store = open_kv("memory", prefix=unique_prefix, clock=FakeClock(1000.0))
    else:
        store = open_kv(request.getfixturevalue("redis_url"), prefix=unique_prefix)
    yield store
    await store.close()


async def test_ban_check_lift_and_list(kv: KVStore) -> None:
    bans = BanList(kv)
    assert not await bans.is_banned("192.0.2.1")
    await bans.ban("192.0.2.1", 300, "pike")
    await bans.ban("2001:db8::1", None, "manual")
    assert await bans.is_banned("192.0.2.1")
    assert await bans.banned(["192.0.2.1", "192.0.2.2", "2001:db8::1"]) == [True, False, True]
    listed = await bans.list()
    assert [(b.source, b.reason) for b in listed] == [
        ("192.0.2.1", "pike"),
        ("2001:db8::1", "manual"),
    ]
    assert 0 < listed[0].remaining <= 300
    assert listed[1].remaining == math.inf
    assert await bans.lift("192.0.2.1")
    assert not await bans.is_banned("192.0.2.1")
    assert not await bans.lift("192.0.2.1")


async def test_a_ban_taken_through_one_client_holds_for_another(
    redis_url: str, unique_prefix: str
) -> None:
    first, second = (open_kv(redis_url, prefix=unique_prefix) for _ in range(2))
    try:
        await BanList(first).ban("198.51.100.7", 60, "auth lockout")
        assert await BanList(second).is_banned("198.51.100.7")
    finally:
        await first.close()
        await second.close()
