"""Cluster fan-out: instance responders answer, the client merges and names the silent.

On the in-process bus and memory store, and on the real NATS and Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from sipmesh.runtime.cluster import (
    ANNOUNCE_TTL,
    INSTANCE_KEY,
    ClusterClient,
    InstanceResponder,
    metric_values,
    stat_name,
)
from sipmesh.state.bus import EventBus
from sipmesh.state.factory import open_bus, open_kv
from sipmesh.state.kv import KVStore


@dataclass
class Backends:
    bus: EventBus
    kv: KVStore


@pytest.fixture(params=["memory", pytest.param("real", marks=pytest.mark.nats)])
async def backends(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[Backends]:
    if request.param == "memory":
        bus, kv = await open_bus("memory", prefix=unique_prefix), open_kv("memory")
    else:
        nats_url = request.getfixturevalue("nats_url")
        redis_url = request.getfixturevalue("redis_url")
        bus = await open_bus(nats_url, prefix=unique_prefix)
        kv = open_kv(redis_url, prefix=unique_prefix + ":")
    try:
        yield Backends(bus, kv)
    finally:
        await bus.close()
        await kv.close()


def responder(
    b: Backends, name: str, registry: CollectorRegistry, levels: list[str]
) -> InstanceResponder:
    return InstanceResponder(
        bus=b.bus,
        kv=b.kv,
        instance_id=name,
        services=("edge",) if name.startswith("edge") else ("registrar",),
        version="9.9",
        started_at=time.time() - 5,
        registry=registry,
        health=lambda: {"edge": "running"},
        set_log_level=levels.append,
        clock=time.time,
    )


def test_stat_names_follow_kamailio_groups() -> None:
    assert stat_name("sipmesh_rcv_requests") == ("core", "rcv_requests")
    assert stat_name("sipmesh_accepted_regs") == ("registrar", "accepted_regs")
    assert stat_name("sipmesh_registered_users") == ("usrloc", "registered_users")
    assert stat_name("sipmesh_active_transactions") == ("tmx", "active_transactions")
    assert stat_name("sipmesh_media_relay_sessions") == ("media_relay", "sessions")
    registry = CollectorRegistry()
    Counter("sipmesh_rcv_requests", "r", ["method"], registry=registry).labels("INVITE").inc(3)
    Gauge("sipmesh_registered_users", "u", registry=registry).set(2)
    assert metric_values(registry) == {
        "core:rcv_requests{method=INVITE}": 3.0,
        "usrloc:registered_users": 2.0,
    }
    assert metric_values(registry, "usrloc") == {"usrloc:registered_users": 2.0}


async def test_gather_merges_answers_and_names_the_silent(backends: Backends) -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    Counter("sipmesh_rcv_requests", "r", registry=r1).inc(4)
    Counter("sipmesh_rcv_requests", "r", registry=r2).inc(6)
    levels: list[str] = []
    edge1 = responder(backends, "edge-1", r1, levels)
    edge2 = responder(backends, "edge-2", r2, levels)
    await edge1.start()
    await edge2.start()
    # An instance that announced itself and then went silent (crashed: its key is
    # still in the store until the TTL runs out).
    await backends.kv.set(INSTANCE_KEY + "edge-dead", b'{"id": "edge-dead"}', ttl=ANNOUNCE_TTL)
    client = ClusterClient(backends.bus, backends.kv)
    try:
        assert set(await client.announced()) == {"edge-1", "edge-2", "edge-dead"}
        got = await client.gather("stats", {"group": "core"}, timeout=1.0)
        assert got.missing == ["edge-dead"]
        assert got.answers["edge-1"]["values"] == {"core:rcv_requests": 4.0}
        assert got.answers["edge-2"]["values"] == {"core:rcv_requests": 6.0}
        info = await client.gather("info", timeout=1.0, expected={"edge-1", "edge-2"})
        assert info.missing == []
        assert info.answers["edge-1"]["version"] == "9.9"
        assert info.answers["edge-1"]["uptime"] >= 5
        assert info.services["edge-2"] == ["edge"]
        level = await client.gather("log_level", {"level": "debug"}, timeout=1.0)
        assert sorted(level.answers) == ["edge-1", "edge-2"]
        assert levels == ["DEBUG", "DEBUG"]
        bad = await client.gather("log_level", {"level": "loud"}, timeout=1.0)
        assert "unknown log level" in bad.answers["edge-1"]["error"]
    finally:
        await edge1.stop()
        await edge2.stop()
    # A stopped responder withdraws its announcement.
    assert "edge-1" not in await client.announced()
