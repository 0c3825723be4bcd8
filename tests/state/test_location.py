"""LocationStore contract on MemoryLocationStore and RedisLocationStore (fake clock on both:
bindings carry absolute expiry times, which the stores compare with their clock)."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace

import pytest

from sipmesh.state.errors import StateUnavailable
from sipmesh.state.location import Binding
from sipmesh.state.location_redis import RedisLocationStore
from sipmesh.state.redis_common import make_redis_client
from sipmesh.state.testing import LocCase, free_port, redis_server

AOR = "sip:alice@example.com"


def mk(case: LocCase, contact: str, expires: float, **kw: object) -> Binding:
    now = case.clock()
    fields: dict[str, object] = {"last_modified": now, "call_id": "c1", "cseq": 1}
    fields.update(kw)
    return Binding(aor=AOR, contact=contact, expires_at=now + expires, **fields)  # type: ignore[arg-type]


async def test_add_get_round_trip_every_field(loc_case: LocCase) -> None:
    b = Binding(
        aor=AOR,
        contact="sip:alice@192.0.2.1:5060;transport=tcp",
        expires_at=loc_case.clock() + 3600,
        q=0.7,
        call_id="abc@host",
        cseq=42,
        path=("<sip:edge1.example.com;lr>", "<sip:p2;lr>"),
        received="sip:198.51.100.7:40000;transport=tcp",
        transport="tcp",
        socket="tcp:10.0.0.1:5060",
        edge_id="edge-1",
        flow_id="flow-9",
        instance='"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>"',
        reg_id=1,
        user_agent="baresip",
        methods=0x1FF,
        flags=2,
        cflags=4,
        last_modified=loc_case.clock(),
        ruid="uloc-1",
        attrs={"k": [1, "v"]},
    )
    live = await loc_case.store.update(AOR, lambda cur: [*cur, b])
    assert live == [b]
    assert await loc_case.store.get(AOR) == [b]
    other = loc_case.open_peer()
    assert await other.get(AOR) == [b]
    assert await loc_case.store.get("sip:nobody@example.com") == []


async def test_order_q_then_freshness(loc_case: LocCase) -> None:
    t = loc_case.clock()
    bs = [
        mk(loc_case, "sip:a@h1", 100, q=0.5, last_modified=t),
        mk(loc_case, "sip:a@h2", 100, q=None, last_modified=t - 10),
        mk(loc_case, "sip:a@h3", 100, q=1.0, last_modified=t),
        mk(loc_case, "sip:a@h4", 100, q=0.5, last_modified=t + 1),
    ]
    await loc_case.store.update(AOR, lambda cur: bs)
    got = [b.contact for b in await loc_case.store.get(AOR)]
    assert got == ["sip:a@h3", "sip:a@h2", "sip:a@h4", "sip:a@h1"]


async def test_expiry_honoured_on_read_and_swept_once(loc_case: LocCase) -> None:
    store = loc_case.store
    await store.update(
        AOR, lambda cur: [mk(loc_case, "sip:a@short", 10), mk(loc_case, "sip:a@long", 100)]
    )
    await store.update(
        "sip:bob@example.com",
        lambda cur: [replace(mk(loc_case, "sip:b@x", 20), aor="sip:bob@example.com")],
    )
    assert await store.count() == 3
    assert await store.list_aors() == ["sip:alice@example.com", "sip:bob@example.com"]
    loc_case.clock.advance(30)
    assert [b.contact for b in await store.get(AOR)] == ["sip:a@long"]
    assert await store.get("sip:bob@example.com") == []
    assert await store.count() == 1
    assert await store.list_aors() == [AOR]
    swept = await store.sweep()
    assert sorted(b.contact for b in swept) == ["sip:a@short", "sip:b@x"]
    assert await store.sweep() == []
    loc_case.clock.advance(100)
    swept = await store.sweep(loc_case.clock())
    assert [b.contact for b in swept] == ["sip:a@long"]
    assert await store.count() == 0
    assert await store.list_aors() == []


async def test_update_function_sees_only_live_and_expired_kept_for_sweep(loc_case: LocCase) -> None:
    store = loc_case.store
    await store.update(
        AOR, lambda cur: [mk(loc_case, "sip:a@old", 5), mk(loc_case, "sip:a@keep", 50)]
    )
    loc_case.clock.advance(10)
    seen: list[list[str]] = []

    def fn(cur: list[Binding]) -> list[Binding]:
        seen.append([b.contact for b in cur])
        return [*cur, mk(loc_case, "sip:a@new", 60)]

    live = await store.update(AOR, fn)
    assert seen[-1] == ["sip:a@keep"]
    assert sorted(b.contact for b in live) == ["sip:a@keep", "sip:a@new"]
    # The expired binding was not handed to fn, but the sweep still reports it.
    assert [b.contact for b in await store.sweep()] == ["sip:a@old"]


async def test_refresh_and_remove_one_contact(loc_case: LocCase) -> None:
    store = loc_case.store
    await store.update(AOR, lambda cur: [mk(loc_case, "sip:a@1", 30), mk(loc_case, "sip:a@2", 30)])
    loc_case.clock.advance(20)
    live = await store.update(
        AOR,
        lambda cur: [
            replace(b, expires_at=loc_case.clock() + 60, cseq=b.cseq + 1)
            for b in cur
            if b.contact != "sip:a@2"
        ],
    )
    assert [(b.contact, b.cseq) for b in live] == [("sip:a@1", 2)]
    loc_case.clock.advance(30)
    assert [b.contact for b in await store.get(AOR)] == ["sip:a@1"]
    # The removed contact is gone for good: not reported by a sweep either.
    assert await store.sweep() == []


async def test_update_validates(loc_case: LocCase) -> None:
    store = loc_case.store
    with pytest.raises(ValueError, match="two bindings"):
        await store.update(AOR, lambda cur: [mk(loc_case, "sip:x", 5), mk(loc_case, "sip:x", 6)])
    with pytest.raises(ValueError, match="binding for"):
        await store.update(AOR, lambda cur: [replace(mk(loc_case, "sip:x", 5), aor="sip:other@h")])
    assert await store.get(AOR) == []


async def test_remove(loc_case: LocCase) -> None:
    store = loc_case.store
    await store.update(AOR, lambda cur: [mk(loc_case, "sip:a@1", 30), mk(loc_case, "sip:a@2", 3)])
    loc_case.clock.advance(5)
    removed = await store.remove(AOR)
    assert [b.contact for b in removed] == ["sip:a@1"]
    assert await store.get(AOR) == []
    assert await store.sweep() == []
    assert await store.remove(AOR) == []


async def test_get_many(loc_case: LocCase) -> None:
    store = loc_case.store
    await store.update(AOR, lambda cur: [mk(loc_case, "sip:a@1", 30)])
    got = await store.get_many([AOR, "sip:none@h"])
    assert list(got) == [AOR, "sip:none@h"]
    assert [b.contact for b in got[AOR]] == ["sip:a@1"]
    assert got["sip:none@h"] == []


async def test_concurrent_updaters_lose_nothing(loc_case: LocCase) -> None:
    """Two handles (two Redis connection pools) add contacts to one AOR at once."""
    a, b = loc_case.store, loc_case.open_peer()

    async def add(store_index: int, n: int) -> None:
        store = (a, b)[store_index]
        contact = f"sip:u{store_index}-{n}@h"

        def fn(cur: list[Binding]) -> list[Binding]:
            return [*cur, mk(loc_case, contact, 3600)]

        await store.update(AOR, fn)
        await asyncio.sleep(0)

    await asyncio.gather(*(add(i % 2, i) for i in range(40)))
    got = await a.get(AOR)
    assert sorted(x.contact for x in got) == sorted(f"sip:u{i % 2}-{i}@h" for i in range(40))
    assert await a.count() == 40


async def test_concurrent_counter_in_binding(loc_case: LocCase) -> None:
    """Read-modify-write of one binding's cseq from two handles: no increment is lost."""
    a, b = loc_case.store, loc_case.open_peer()
    await a.update(AOR, lambda cur: [mk(loc_case, "sip:c@h", 3600, cseq=0)])

    def bump(cur: list[Binding]) -> list[Binding]:
        return [replace(x, cseq=x.cseq + 1) for x in cur]

    await asyncio.gather(*(s.update(AOR, bump) for s in [a, b] * 25))
    (only,) = await a.get(AOR)
    assert only.cseq == 50


async def test_sweep_exactly_once_across_two_sweepers(loc_case: LocCase) -> None:
    a, b = loc_case.store, loc_case.open_peer()
    for i in range(30):
        aor = f"sip:user{i}@example.com"
        new = Binding(aor=aor, contact=f"sip:{i}@h", expires_at=loc_case.clock() + 1 + i % 3)
        await a.update(aor, functools.partial(lambda n, cur: [n], new))
    loc_case.clock.advance(10)
    results = await asyncio.gather(*(s.sweep() for s in [a, b, a, b]))
    reported = [x.contact for r in results for x in r]
    assert sorted(reported) == sorted(f"sip:{i}@h" for i in range(30))
    assert len(reported) == len(set(reported)) == 30
    assert await a.list_aors() == []


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_location_unavailable_then_reconnects() -> None:
    port = free_port()
    server = redis_server(port)
    server.start()
    store = RedisLocationStore(
        make_redis_client(f"redis://127.0.0.1:{port}/0", op_timeout=1.0), op_timeout=1.0
    )
    b = Binding(aor=AOR, contact="sip:a@h", expires_at=2e9)
    try:
        await store.update(AOR, lambda cur: [b])
        server.stop()
        with pytest.raises(StateUnavailable):
            await store.get(AOR)
        with pytest.raises(StateUnavailable):
            await store.update(AOR, lambda cur: [b])
        assert not store.healthy
        server.start()
        assert await store.get(AOR) == []
        assert await store.update(AOR, lambda cur: [b]) == [b]
        assert store.healthy
    finally:
        await store.close()
        server.stop()
