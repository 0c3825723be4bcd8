"""EdgeService end to end on 127.0.0.1: malformed input, floods, shared bans, handover."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipmesh.edge.service import EdgeService
from sipmesh.edge.transport.base import udp_flow_id
from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import Response

from .conftest import FakeRouter, Peer, request_text, start_edge, udp_port

PeerFactory = Callable[..., Awaitable[Peer]]
TORTURE = Path(__file__).resolve().parents[1] / "sip" / "torture" / "rfc4475"


async def not_here(req: router_pb2.RouteRequest) -> router_pb2.Decision:
    return router_pb2.Decision(reply=router_pb2.Reply(code=404, reason="Not Here"))


def counter(edge: EdgeService, name: str, **labels: str) -> float:
    value = edge.stats.registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def test_malformed_input_answered_or_dropped_while_others_served(
    udp_peers: PeerFactory,
) -> None:
    bad, good = await udp_peers("127.0.0.3"), await udp_peers()
    edge = await start_edge(FakeRouter(not_here), trusted_sources=["127.0.0.3"])
    try:
        port = udp_port(edge)
        files = sorted(TORTURE.glob("*.dat"))
        assert files, "RFC 4475 torture messages missing"
        for path in files:
            bad.send(path.read_bytes(), port)
        for _ in range(20):
            bad.send(os.urandom(secrets.randbelow(1400) + 1), port)
        bad.send(b"INVITE sip:x SIP/2.0\r\n" + b"X" * 60000, port)  # near the UDP max
        good.send(request_text("OPTIONS", "sip:bob@sipmesh.test", good.port), port)
        resp = await good.next_response()
        assert resp.status == 404
        assert counter(edge, "sipmesh_err_requests_total") > 0
        # answers that came back to the bad peer are all proper responses
        assert all(isinstance(m, Response) for m in bad.pending())
    finally:
        await edge.stop(0)


async def test_flood_banned_while_another_source_is_served(udp_peers: PeerFactory) -> None:
    flooder, other = await udp_peers("127.0.0.2"), await udp_peers()
    edge = await start_edge(FakeRouter(not_here))
    try:
        port = udp_port(edge)
        for i in range(40):
            flooder.send(request_text("OPTIONS", "sip:bob@sipmesh.test", flooder.port,
                                      call_id=f"f{i}"), port)  # fmt: skip
            if i % 10 == 0:
                other.send(request_text("OPTIONS", "sip:bob@sipmesh.test", other.port), port)
        answered = [(await other.next_response()).status for _ in range(4)]
        assert answered == [404] * 4
        assert edge.antiflood is not None
        assert edge.antiflood.is_banned("127.0.0.2")
        assert not edge.antiflood.is_banned("127.0.0.1")
        await asyncio.sleep(0.2)  # let the flooder's answered requests arrive
        got = len([m for m in flooder.pending() if isinstance(m, Response)])
        assert got == 16  # pike's limit; the 17th and later were dropped
        assert counter(edge, "sipmesh_antiflood_bans_total") == 1
    finally:
        await edge.stop(0)


@pytest.mark.redis
async def test_ban_by_one_edge_holds_on_a_second_sharing_redis(
    udp_peers: PeerFactory, redis_url: str, unique_prefix: str
) -> None:
    from sipmesh.state.factory import open_kv

    flooder = await udp_peers("127.0.0.4")
    kv1, kv2 = open_kv(redis_url, prefix=unique_prefix), open_kv(redis_url, prefix=unique_prefix)
    router = FakeRouter(not_here)
    edge1 = await start_edge(router, kv=kv1, ban_sync_interval=0.2)
    edge2 = await start_edge(router, kv=kv2, ban_sync_interval=0.2)
    try:
        # the flooder has talked to edge2 before (so edge2 watches it)
        flooder.send(request_text("OPTIONS", "sip:bob@sipmesh.test", flooder.port), udp_port(edge2))
        assert (await flooder.next_response()).status == 404
        for i in range(30):
            flooder.send(request_text("OPTIONS", "sip:bob@sipmesh.test", flooder.port,
                                      call_id=f"x{i}"), udp_port(edge1))  # fmt: skip
        assert edge1.antiflood is not None
        assert edge2.antiflood is not None
        async with asyncio.timeout(10):
            while not edge2.antiflood.is_banned("127.0.0.4"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        flooder.pending()
        before = counter(edge2, "sipmesh_antiflood_dropped_total")
        flooder.send(request_text("OPTIONS", "sip:bob@sipmesh.test", flooder.port), udp_port(edge2))
        async with asyncio.timeout(10):
            while counter(edge2, "sipmesh_antiflood_dropped_total") == before:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert [m for m in flooder.pending() if isinstance(m, Response)] == []
    finally:
        await edge1.stop(0)
        await edge2.stop(0)
        await kv1.close()
        await kv2.close()


async def test_branch_handed_to_the_edge_owning_the_flow(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edges: dict[str, Any] = {}

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        owner: EdgeService = edges["b"]
        listener = next(i for i in owner.transports.listeners() if i.transport == "udp")
        flow = udp_flow_id("udp", listener.name, "127.0.0.1", callee.port)
        target = router_pb2.Target(
            uri=f"sip:bob@127.0.0.1:{callee.port}",
            edge_id=owner.edge_id,
            flow_id=flow,
            destination=common_pb2.Address(
                transport=common_pb2.TRANSPORT_UDP, host="127.0.0.1", port=callee.port
            ),
        )
        return router_pb2.Decision(relay=router_pb2.Relay(targets=[target]))

    router = FakeRouter(decide)
    edge_b = await start_edge(router)
    edges["b"] = edge_b

    async def peers() -> EdgeService:
        return edge_b  # the one other edge: it owns the callee's flow

    edge_a = await start_edge(router, peers=peers)
    try:
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), udp_port(edge_a))
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        assert len(invite.vias) == 3  # edge B, edge A, caller
        assert invite.vias[0].port == udp_port(edge_b)
        assert invite.vias[1].port == udp_port(edge_a)
        callee.send(callee.reply(invite, 200, "OK"), udp_port(edge_b))
        ok = await caller.next_response()
        assert ok.status == 200
        assert len(ok.vias) == 1
    finally:
        await edge_a.stop(0)
        await edge_b.stop(0)
