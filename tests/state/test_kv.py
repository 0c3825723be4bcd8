"""KVStore contract: the same tests on MemoryKV (fake clock) and RedisKV (real server)."""

from __future__ import annotations

import asyncio
import math

import pytest

from sipmesh.state.clock import FakeClock
from sipmesh.state.errors import StateUnavailable
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.kv_redis import RedisKV
from sipmesh.state.redis_common import make_redis_client
from sipmesh.state.testing import KVCase, free_port, redis_server


def is_healthy(store: KVStore) -> bool:
    # A call, so that mypy does not narrow the property across the server restart.
    return store.healthy


async def test_set_get_delete(kv_case: KVCase) -> None:
    kv = kv_case.store
    assert await kv.get("a") is None
    await kv.set("a", b"\x00one")
    assert await kv.get("a") == b"\x00one"
    assert await kv.ttl("a") == math.inf
    assert await kv.delete("a") is True
    assert await kv.delete("a") is False
    assert await kv.get("a") is None
    assert await kv.ttl("a") is None


async def test_get_many_keeps_order(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("k1", b"1")
    await kv.set("k3", b"3")
    assert await kv.get_many(["k3", "k2", "k1"]) == [b"3", None, b"1"]
    assert await kv.get_many([]) == []


async def test_ttl_expiry(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("ban:1.2.3.4", b"1", ttl=0.4)
    await kv.set("keep", b"k")
    left = await kv.ttl("ban:1.2.3.4")
    assert left is not None
    assert 0 < left <= 0.4
    await kv_case.advance(0.6)
    assert await kv.get("ban:1.2.3.4") is None
    assert await kv.ttl("ban:1.2.3.4") is None
    assert await kv.get("keep") == b"k"
    assert await kv.scan("ban:") == []


async def test_set_without_ttl_clears_expiry(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("x", b"1", ttl=0.3)
    await kv.set("x", b"2")
    await kv_case.advance(0.5)
    assert await kv.get("x") == b"2"


async def test_set_if_absent(kv_case: KVCase) -> None:
    kv = kv_case.store
    assert await kv.set_if_absent("nonce", b"a", ttl=0.3) is True
    assert await kv.set_if_absent("nonce", b"b", ttl=0.3) is False
    assert await kv.get("nonce") == b"a"
    await kv_case.advance(0.5)
    assert await kv.set_if_absent("nonce", b"c") is True
    assert await kv.get("nonce") == b"c"


async def test_incr_sets_ttl_only_on_create(kv_case: KVCase) -> None:
    kv = kv_case.store
    assert await kv.incr("flood", ttl=0.5) == 1
    await kv_case.advance(0.3)
    # A later hit does not restart the window.
    assert await kv.incr("flood", 2, ttl=0.5) == 3
    left = await kv.ttl("flood")
    assert left is not None
    assert left <= 0.25
    await kv_case.advance(0.4)
    assert await kv.get("flood") is None
    assert await kv.incr("flood", ttl=0.5) == 1
    assert await kv.incr("plain", -4) == -4
    assert await kv.get("plain") == b"-4"


async def test_incr_rejects_non_integer(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("text", b"abc")
    with pytest.raises(ValueError, match="not an integer"):
        await kv.incr("text")


async def test_incr_atomic_under_concurrency(kv_case: KVCase) -> None:
    stores = [kv_case.store, kv_case.open_peer(), kv_case.open_peer()]

    async def hammer(i: int) -> list[int]:
        return [await stores[i % 3].incr("ctr", ttl=30) for _ in range(50)]

    results = await asyncio.gather(*(hammer(i) for i in range(6)))
    seen = sorted(v for r in results for v in r)
    # Every increment returned a distinct value: none was lost or duplicated.
    assert seen == list(range(1, 301))
    assert await kv_case.store.get("ctr") == b"300"


async def test_scan_by_prefix_and_isolation(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("dlg:1", b"a")
    await kv.set("dlg:2", b"b")
    await kv.set("ban:x*", b"c")
    assert await kv.scan("dlg:") == ["dlg:1", "dlg:2"]
    assert await kv.scan("ban:x*") == ["ban:x*"]
    assert sorted(await kv.scan()) == ["ban:x*", "dlg:1", "dlg:2"]
    assert kv.prefix


async def test_batch_one_round_trip(kv_case: KVCase) -> None:
    kv = kv_case.store
    await kv.set("b1", b"v1")
    batch = kv.batch()
    g = batch.get("b1")
    missing = batch.get("nope")
    c1 = batch.incr("bc", ttl=5)
    c2 = batch.incr("bc", 4)
    s = batch.set("b2", b"v2", ttl=5)
    n1 = batch.set_if_absent("b1", b"zz")
    n2 = batch.set_if_absent("b3", b"v3")
    d = batch.delete("b1")
    assert len(batch) == 8
    with pytest.raises(RuntimeError):
        _ = g.value
    results = await batch.execute()
    assert results == [b"v1", None, 1, 5, None, False, True, True]
    assert (g.value, missing.value, c1.value, c2.value, s.value) == (b"v1", None, 1, 5, None)
    assert (n1.value, n2.value, d.value) == (False, True, True)
    assert await kv.get_many(["b1", "b2", "b3", "bc"]) == [None, b"v2", b"v3", b"5"]
    ttl = await kv.ttl("bc")
    assert ttl is not None
    assert 0 < ttl <= 5
    assert await kv.batch().execute() == []


async def test_health(kv_case: KVCase) -> None:
    await kv_case.store.ping()
    assert kv_case.store.healthy


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_unavailable_then_reconnects() -> None:
    port = free_port()
    server = redis_server(port)
    server.start()
    kv = RedisKV(make_redis_client(f"redis://127.0.0.1:{port}/0", op_timeout=1.0), op_timeout=1.0)
    try:
        await kv.set("k", b"before")
        assert is_healthy(kv)
        server.stop()
        with pytest.raises(StateUnavailable):
            await kv.get("k")
        assert not is_healthy(kv)
        with pytest.raises(StateUnavailable):
            await kv.ping()
        b = kv.batch()
        b.incr("c")
        with pytest.raises(StateUnavailable):
            await b.execute()
        server.start()
        # Same client object: it reconnects by itself (the server kept no data: --save "").
        assert await kv.get("k") is None
        await kv.set("k", b"after")
        assert await kv.get("k") == b"after"
        assert is_healthy(kv)
    finally:
        await kv.close()
        server.stop()


async def test_memory_drops_expired_keys_nobody_reads() -> None:
    clock = FakeClock()
    kv = MemoryKV(clock=clock)
    for i in range(100):
        await kv.set(f"nonce:{i}", b"1", ttl=10)
    await kv.set("keep", b"k")
    clock.advance(11)
    await kv.set("trigger", b"t", ttl=10)
    assert kv.stored_keys() == 2
    assert await kv.get("keep") == b"k"
