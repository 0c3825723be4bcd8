"""pike + ipban: local sliding window, shared bans through the key/value store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sipmesh.bans import BanList
from sipmesh.edge.antiflood import AntiFlood, FloodConfig
from sipmesh.state.kv_memory import MemoryKV


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_bans_the_17th_request() -> None:
    clock = Clock()
    banned: list[str] = []
    flood = AntiFlood(MemoryKV(clock=clock), FloodConfig(), clock=clock,
                      on_ban=lambda ip, until: banned.append(ip))  # fmt: skip
    for _ in range(16):
        assert flood.allow("192.0.2.1")
        clock.now += 0.01
    assert not flood.allow("192.0.2.1")
    assert flood.is_banned("192.0.2.1")
    assert banned == ["192.0.2.1"]
    assert not flood.is_banned("192.0.2.2")
    clock.now += 301
    assert not flood.is_banned("192.0.2.1")  # the ban time passed


def test_slow_source_never_banned() -> None:
    clock = Clock()
    flood = AntiFlood(MemoryKV(clock=clock), FloodConfig(), clock=clock)
    for _ in range(100):
        assert flood.allow("192.0.2.1")
        clock.now += 0.2  # 10 per 2 s


def test_trusted_sources_exempt() -> None:
    clock = Clock()
    flood = AntiFlood(MemoryKV(clock=clock), FloodConfig(trusted=("192.0.2.0/24",)), clock=clock)
    assert all(flood.allow("192.0.2.9") for _ in range(100))
    assert not all(flood.allow("198.51.100.1") for _ in range(100))


async def test_ban_shared_through_the_store_and_lifted() -> None:
    kv = MemoryKV()
    clock = Clock()
    a = AntiFlood(kv, FloodConfig(), clock=clock)
    b = AntiFlood(kv, FloodConfig(), clock=clock)
    assert b.allow("192.0.2.7")  # b has seen the source
    for _ in range(17):
        a.allow("192.0.2.7")
    await a.sync()
    assert await BanList(kv).is_banned("192.0.2.7")
    await b.sync()
    assert b.is_banned("192.0.2.7")
    await BanList(kv).lift("192.0.2.7")
    await b.sync()
    assert not b.is_banned("192.0.2.7")


async def test_flood_spread_over_two_instances_detected() -> None:
    kv = MemoryKV()
    clock = Clock()
    a = AntiFlood(kv, FloodConfig(), clock=clock)
    b = AntiFlood(kv, FloodConfig(), clock=clock)
    for _ in range(10):  # 10 + 10 > 16, neither alone over the limit
        assert a.allow("192.0.2.8")
        assert b.allow("192.0.2.8")
    await a.sync()
    await b.sync()
    assert b.is_banned("192.0.2.8")


@pytest.mark.redis
async def test_ban_by_one_instance_holds_on_another_within_a_second(
    redis_url: str, unique_prefix: str
) -> None:
    from sipmesh.state.factory import open_kv

    kv1 = open_kv(redis_url, prefix=unique_prefix)
    kv2 = open_kv(redis_url, prefix=unique_prefix)
    cfg = FloodConfig(sync_interval=0.2)
    loop = asyncio.get_running_loop()
    a = AntiFlood(kv1, cfg, clock=loop.time)
    b = AntiFlood(kv2, cfg, clock=loop.time)
    a.start()
    b.start()
    try:
        assert b.allow("192.0.2.77")
        for _ in range(20):
            a.allow("192.0.2.77")
        assert a.is_banned("192.0.2.77")
        # "Within a second" is structural: the sync interval is at most 1 s (config
        # validation), and one sync of b after a's write is enough. Counted in syncs,
        # not timed; the timeout only bounds the test.
        async with asyncio.timeout(10):
            await _until(lambda: a.syncs >= 1)
            after = b.syncs
            await _until(lambda: b.syncs > after)
        assert b.is_banned("192.0.2.77")
    finally:
        await a.stop()
        await b.stop()
        await kv1.close()
        await kv2.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - polling counters of a background task
        await asyncio.sleep(0.01)
