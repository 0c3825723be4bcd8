"""The registration replicator (sipmesh/regions/replicator.py) between two regions.

Two regions' buses are two memory buses (their namespaces), the shared inter-region
subject one more memory bus standing in for the NATS leaf-node link; the real NATS
servers joined by a leaf node are exercised by tests/cluster/test_regions.py.
"""

from __future__ import annotations

import asyncio

import pytest

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.regions.index import RemoteIndex
from sipmesh.regions.replicator import ADDRESS_HEADER, Replicator
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.kv_memory import MemoryKV


def registration(aor: str, expires_at: float, kind: int = 1, contacts: int = 1) -> bytes:
    binding = common_pb2.Binding(aor=aor, contact=f"sip:{aor}@10.0.0.1", expires_at=expires_at)
    event = events_pb2.RegistrationEvent(kind=kind, binding=binding, contacts=contacts)  # type: ignore[arg-type]
    return events_pb2.Envelope(id="e1", registration=event).SerializeToString()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_registration_in_a_is_indexed_in_b_only() -> None:
    clock = FakeClock()
    shared = MemoryBus(prefix="sipmesh-regions")
    regions = {}
    for name in ("a", "b"):
        local = MemoryBus(prefix=f"sipmesh_{name}")
        index = RemoteIndex(MemoryKV(prefix=f"{name}:", clock=clock), clock=clock)
        rep = Replicator(
            region=name, address=f"sip:edge-{name}:5060", local=local, shared=shared, index=index
        )
        await rep.start()
        regions[name] = (local, index, rep)
    seen: list[tuple[str, str]] = []

    async def watch(message: object) -> None:
        seen.append((message.subject, message.headers[ADDRESS_HEADER]))  # type: ignore[attr-defined]

    watcher = await shared.subscribe("a.registration.*", watch)
    try:
        local_a, index_a, rep_a = regions["a"]
        _, index_b, rep_b = regions["b"]
        await local_a.publish("sipmesh.registration.added", registration("alice", clock() + 300))
        await settle()
        assert seen == [("a.registration.added", "sip:edge-a:5060")]
        home = await index_b.lookup("alice")
        assert home is not None
        assert (home.region, home.address) == ("a", "sip:edge-a:5060")
        assert await index_a.lookup("alice") is None  # a region never indexes itself
        assert (rep_a.sent, rep_b.indexed, rep_a.ignored) == (1, 1, 1)
        # Unregistration in A removes the entry in B.
        await local_a.publish(
            "sipmesh.registration.removed",
            registration("alice", 0, kind=events_pb2.RegistrationEvent.KIND_REMOVED, contacts=0),
        )
        await settle()
        assert await index_b.lookup("alice") is None
    finally:
        await watcher.stop()
        for _, _, rep in regions.values():
            await rep.stop()


async def test_foreign_payloads_and_unlisted_peers_are_ignored() -> None:
    clock = FakeClock()
    shared = MemoryBus(prefix="x")
    index = RemoteIndex(MemoryKV(clock=clock), clock=clock)
    rep = Replicator(
        region="b",
        address="sip:b",
        local=MemoryBus(prefix="l"),
        shared=shared,
        index=index,
        peers=["a"],
    )
    await rep.start()
    try:
        headers = {ADDRESS_HEADER: "sip:c"}
        await shared.publish("c.registration.added", registration("carol", clock() + 60), headers)
        await shared.publish("a.registration.added", b"\xff\x00garbage", {ADDRESS_HEADER: "sip:a"})
        await shared.publish("a.registration.added", registration("nohdr", clock() + 60))
        await settle()
        assert rep.indexed == 0
        assert rep.ignored == 3
        assert await index.lookup("carol") is None
    finally:
        await rep.stop()


def test_replicator_needs_a_name_and_an_address() -> None:
    clock = FakeClock()
    index = RemoteIndex(MemoryKV(clock=clock), clock=clock)
    bus = MemoryBus()
    for region, address in (("", "sip:a"), ("a", "")):
        with pytest.raises(ValueError, match="regions"):
            Replicator(region=region, address=address, local=bus, shared=bus, index=index)
