"""branch_route / reply_route callbacks (services/edge/callbacks.py) and the INVITE the
router drops after 100 Trying (services/edge/cancels.py), over UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port
from .test_media import answer

PeerFactory = Callable[[], Awaitable[Peer]]
Edit = common_pb2.HeaderEdit


async def test_branch_route_edits_one_branch_and_drops_another(udp_peers: PeerFactory) -> None:
    caller, first, second = await udp_peers(), await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        if req.kind == router_pb2.ROUTE_KIND_BRANCH:
            if req.branch.uri.endswith(f":{second.port}"):
                return router_pb2.Decision(drop=router_pb2.Drop(reason="not this one"))
            edit = Edit(op=Edit.OP_APPEND, name="X-Branch", value=str(req.branch_index))
            return router_pb2.Decision(proceed=router_pb2.Proceed(), edits=[edit])
        return relay_to(
            first.port, second.port, handlers=router_pb2.Handlers(branch="b"), record_route=True
        )

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        invite = await first.next_request()
        assert invite.get("X-Branch") == "0"
        with pytest.raises(TimeoutError):
            await second.next(timeout=0.3)
        assert router.kinds() == [
            router_pb2.ROUTE_KIND_REQUEST,
            router_pb2.ROUTE_KIND_BRANCH,
            router_pb2.ROUTE_KIND_BRANCH,
        ]
        first.send(answer(first, invite, 486), port)
        statuses = [(await caller.next_response()).status for _ in range(2)]
        assert statuses == [100, 486]  # 486 beats the dropped branch's 500
    finally:
        await edge.stop(0)


async def test_every_branch_dropped_gives_500(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        if req.kind == router_pb2.ROUTE_KIND_BRANCH:
            return router_pb2.Decision(drop=router_pb2.Drop())
        return relay_to(callee.port, handlers=router_pb2.Handlers(branch="b"))

    edge = await start_edge(FakeRouter(decide))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await caller.next_response()).status == 500
    finally:
        await edge.stop(0)


async def test_reply_route_called_per_reply_but_100_and_edits_applied(
    udp_peers: PeerFactory,
) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        if req.kind == router_pb2.ROUTE_KIND_REPLY:
            if req.reply_status == 183:
                return router_pb2.Decision(drop=router_pb2.Drop())
            edit = Edit(op=Edit.OP_APPEND, name="X-Seen", value=str(req.reply_status))
            return router_pb2.Decision(proceed=router_pb2.Proceed(), edits=[edit])
        return relay_to(callee.port, handlers=router_pb2.Handlers(reply="r"))

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        invite = await callee.next_request()
        for status in (100, 183, 180, 200):
            callee.send(answer(callee, invite, status), port)
            await asyncio.sleep(0.02)  # in order, as a UAS sends them
        responses = [await caller.next_response() for _ in range(3)]
        assert [r.status for r in responses] == [100, 180, 200]  # 183 dropped by the script
        assert [r.get("X-Seen") for r in responses] == [None, "180", "200"]
        replies = [c for c in router.calls if c.kind == router_pb2.ROUTE_KIND_REPLY]
        assert [c.reply_status for c in replies] == [183, 180, 200]  # never the 100
        assert all(c.handler == "r" for c in replies)
    finally:
        await edge.stop(0)


async def test_invite_dropped_after_100_ends_after_timer_c(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def drop(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(drop=router_pb2.Drop(reason="test"))

    edge = await start_edge(FakeRouter(drop), fr_inv_timer=0.3)
    try:
        port = udp_port(edge)
        text = request_text("INVITE", "sip:bob@sipmesh.test", caller.port, branch="z9hG4bKdrop1")
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        assert edge.driver is not None
        layer = edge.driver.layer
        assert layer.transaction_count == 1  # retransmissions still absorbed meanwhile
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        for _ in range(100):
            if layer.transaction_count == 0:
                break
            await asyncio.sleep(0.02)
        assert layer.transaction_count == 0
        with pytest.raises(TimeoutError):
            await caller.next(timeout=0.2)  # ended silently: no final response
    finally:
        await edge.stop(0)


async def test_cancel_of_a_dropped_invite_gets_487(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def drop(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(drop=router_pb2.Drop())

    edge = await start_edge(FakeRouter(drop))
    try:
        port = udp_port(edge)
        args = {"branch": "z9hG4bKdrop2", "call_id": "drop-2"}
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port, **args), port)
        assert (await caller.next_response()).status == 100
        await asyncio.sleep(0.05)  # the router has dropped it
        caller.send(request_text("CANCEL", "sip:bob@sipmesh.test", caller.port, **args), port)
        got = {((r := await caller.next_response()).status, r.cseq.method) for _ in range(2)}
        assert got == {(200, "CANCEL"), (487, "INVITE")}
    finally:
        await edge.stop(0)
