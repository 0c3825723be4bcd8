"""Bans announced on the bus hold on every edge at once (services/edge/banevents.py),
even for sources an edge has never seen; the periodic sync stays the fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sipmesh.edge.antiflood import AntiFlood, FloodConfig
from sipmesh.edge.banevents import BanEvents
from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.kv_memory import MemoryKV

from .conftest import FakeRouter, Peer, request_text, start_edge, udp_port

PeerFactory = Callable[..., Awaitable[Peer]]
_Kind = events_pb2.BanEvent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ban_event(kind: _Kind.Kind.ValueType, ip: str, until: float, service: str) -> bytes:
    ban = _Kind(kind=kind, ip=ip, expires_at=until, reason="test")
    envelope = events_pb2.Envelope(id=f"ban:{ip}", instance="other", service=service, ban=ban)
    return envelope.SerializeToString()


async def settle(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polls state of other tasks
            await asyncio.sleep(0.01)


async def test_ban_and_lift_events_hold_at_once_for_an_unseen_source() -> None:
    clock = Clock()
    bus = MemoryBus()
    flood = AntiFlood(MemoryKV(clock=clock), FloodConfig(), clock=clock)
    learned: list[tuple[str, bool]] = []
    events = BanEvents(
        bus, flood, instance_id="edge-b", on_learned=lambda ip, added: learned.append((ip, added))
    )
    await events.start()
    try:
        # Another edge's anti-flood (events.proto subject)...
        added = ban_event(_Kind.KIND_ADDED, "192.0.2.9", clock.now + 60, "edge")
        await bus.publish("sipmesh.ban.added", added)
        await settle(lambda: flood.is_banned("192.0.2.9"))
        # ...and the admin API's subject (services/admin/live.py).
        await bus.publish(
            "sipmesh.ban.added", ban_event(_Kind.KIND_ADDED, "192.0.2.10", 0, "admin")
        )
        await settle(lambda: flood.is_banned("192.0.2.10"))
        clock.now += 61
        assert not flood.is_banned("192.0.2.9")  # the event's expiry holds
        assert flood.is_banned("192.0.2.10")  # no expiry given: ban_time
        await bus.publish(
            "sipmesh.ban.removed", ban_event(_Kind.KIND_REMOVED, "192.0.2.10", 0, "admin")
        )
        await settle(lambda: not flood.is_banned("192.0.2.10"))
        assert learned == [("192.0.2.9", True), ("192.0.2.10", True), ("192.0.2.10", False)]
    finally:
        await events.stop()
        await bus.close()


async def test_a_learned_ban_is_not_lifted_before_the_store_has_it() -> None:
    """The banning edge writes the store at its next sync; a sync here before that
    must not read the missing key as a lift. Once the grace is over, the store is
    the truth again."""
    clock = Clock()
    kv = MemoryKV(clock=clock)
    flood = AntiFlood(kv, FloodConfig(sync_interval=0.5), clock=clock)
    flood.learn_ban("192.0.2.20", clock.now + 300)
    await flood.sync()
    assert flood.is_banned("192.0.2.20")
    clock.now += 3
    await flood.sync()
    assert not flood.is_banned("192.0.2.20"), "nobody stored the ban: the store is the truth"


async def test_second_edge_drops_a_source_it_never_saw_once_the_first_banned_it(
    udp_peers: PeerFactory,
) -> None:
    """Two edges sharing only the bus (separate key/value stores, so the sync cannot
    carry the ban): a flood at edge A, then the first request of the flooder at
    edge B is dropped as banned."""
    bus = MemoryBus()
    router = FakeRouter()
    edge_a = await start_edge(router, bus=bus, kv=MemoryKV(), pike_limit=3)
    edge_b = await start_edge(router, bus=bus, kv=MemoryKV(), pike_limit=3)
    flooder = await udp_peers("127.0.0.3")
    try:
        for _ in range(6):
            flooder.send(request_text("OPTIONS", "sip:127.0.0.1", flooder.port), udp_port(edge_a))
        flood_a, flood_b = edge_a.antiflood, edge_b.antiflood
        assert flood_a is not None
        assert flood_b is not None
        await settle(lambda: flood_a.is_banned("127.0.0.3"))
        await settle(lambda: flood_b.is_banned("127.0.0.3"))
        flooder.send(request_text("OPTIONS", "sip:127.0.0.1", flooder.port), udp_port(edge_b))
        registry = edge_b.stats.registry
        await settle(lambda: registry.get_sample_value("sipmesh_antiflood_dropped_total") == 1)
        assert registry.get_sample_value("sipmesh_antiflood_bans_total") == 0, "none of B's own"
        assert router.calls == []
    finally:
        await edge_a.stop(0)
        await edge_b.stop(0)
        await bus.close()
