"""The proxy core over real UDP sockets on 127.0.0.1, with a scripted router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import Request, Response

PeerFactory = Callable[[], Awaitable[Peer]]


async def test_invite_relayed_with_100_and_final_forwarded(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, record_route=True)

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), port)
        trying = await caller.next_response()
        assert trying.status == 100
        invite = await callee.next_request()
        assert invite.method == "INVITE"
        assert invite.uri == f"sip:bob@127.0.0.1:{callee.port}"
        assert len(invite.vias) == 2
        assert invite.max_forwards == 69
        assert invite.record_routes and "lr" in str(invite.record_routes[0])
        callee.send(callee.reply(invite, 180, "Ringing"), port)
        ringing = await caller.next_response()
        assert ringing.status == 180
        assert len(ringing.vias) == 1
        callee.send(callee.reply(invite, 200, "OK"), port)
        ok = await caller.next_response()
        assert ok.status == 200
        assert ok.to.tag == "uas1"
        assert router.kinds() == [router_pb2.ROUTE_KIND_REQUEST]
    finally:
        await edge.stop(0)


async def test_retransmitted_invite_absorbed_and_last_response_repeated(
    udp_peers: PeerFactory,
) -> None:
    caller, callee = await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port)

    router = FakeRouter(decide)
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        text = request_text("INVITE", "sip:bob@sipmesh.test", caller.port, branch="z9hG4bKretx")
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        callee.send(callee.reply(invite, 180, "Ringing"), port)
        assert (await caller.next_response()).status == 180
        caller.send(text, port)  # retransmission
        again = await caller.next_response()
        assert again.status == 180  # the last response, repeated by the transaction
        callee.send(callee.reply(invite, 486, "Busy Here"), port)
        busy = await caller.next_response()
        assert busy.status == 486
        assert len(router.calls) == 1
        # the callee got exactly one INVITE (plus the ACK of its 486)
        ack = await callee.next_request()
        assert ack.method == "ACK"
        assert [
            m for m in callee.pending() if isinstance(m, Request) and m.method == "INVITE"
        ] == []
    finally:
        await edge.stop(0)


async def test_options_to_server_answered_without_router(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()
    router = FakeRouter()
    edge = await start_edge(router)
    try:
        port = udp_port(edge)
        caller.send(request_text("OPTIONS", f"sip:127.0.0.1:{port}", caller.port), port)
        ok = await caller.next_response()
        assert ok.status == 200
        assert "INVITE" in (ok.get("Allow") or "")
        assert ok.get("Accept") == "application/sdp"
        assert router.calls == []
    finally:
        await edge.stop(0)


async def test_router_reply_decision(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(reply=router_pb2.Reply(code=404, reason="Not Here"))

    edge = await start_edge(FakeRouter(decide))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        resp = await caller.next_response()
        assert (resp.status, resp.reason) == (404, "Not Here")
        assert resp.to.tag
    finally:
        await edge.stop(0)


async def test_router_down_gives_503_with_retry_after(udp_peers: PeerFactory) -> None:
    caller = await udp_peers()

    async def hang(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    edge = await start_edge(FakeRouter(hang), router_timeout=0.2)
    try:
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await caller.next_response()).status == 100
        resp = await caller.next_response()
        assert resp.status == 503
        assert resp.get("Retry-After") == "5"
    finally:
        await edge.stop(0)


async def test_router_error_gives_503(udp_peers: PeerFactory) -> None:
    from sipmesh.clients.errors import Unavailable

    caller = await udp_peers()

    async def down(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        raise Unavailable("no router", retry_after=7)

    edge = await start_edge(FakeRouter(down))
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        resp = await caller.next_response()
        assert (resp.status, resp.get("Retry-After")) == (503, "7")
    finally:
        await edge.stop(0)


def _statuses(msgs: list[Request | Response]) -> list[int]:
    return [m.status for m in msgs if isinstance(m, Response)]
