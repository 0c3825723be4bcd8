"""NATMANAGE in the edge (services/edge/media.py, proxymedia.py) against a real media
relay service on 127.0.0.1, with a scripted router and UDP SIP peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sipmesh.gen.sipmesh.v1 import media_relay_pb2, router_pb2
from sipmesh.media_relay.service import MediaRelayService
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.stateless import make_response
from tests.media_relay.conftest import Endpoint, media_target, relay_config, rtp, sdp

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port
from .test_cancels import next_method

PeerFactory = Callable[[], Awaitable[Peer]]
MANAGE = router_pb2.MediaOp(kind=router_pb2.MediaOp.KIND_MANAGE, flags=["replace-origin"])


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelayService]:
    service = MediaRelayService(relay_config())
    await service.start()
    yield service
    await service.stop(0)


def with_sdp(text: str, body: bytes) -> bytes:
    head = text.replace(
        "Content-Length: 0\n", f"Content-Type: application/sdp\nContent-Length: {len(body)}\n"
    )
    return head.replace("\n", "\r\n").encode() + body


def invite_bytes(caller: Peer, call_id: str, body: bytes, branch: str | None = None) -> bytes:
    text = request_text(
        "INVITE", "sip:bob@sipmesh.test", caller.port, call_id=call_id, branch=branch
    )
    return with_sdp(text, body)


def in_dialog(method: str, caller: Peer, ok: Response, cseq: int) -> bytes:
    """A request of the caller inside the dialog of ``ok`` (route set reversed, §12.1.2)."""
    routes = "".join(f"Route: {v}\n" for v in reversed(ok.get_all("Record-Route")))
    contact = ok.contacts[0].uri
    text = (
        f"{method} {contact} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK{method.lower()}{cseq};rport\n"
        f"From: {ok.get('From')}\nTo: {ok.get('To')}\nCall-ID: {ok.call_id}\n"
        f"CSeq: {cseq} {method}\nMax-Forwards: 70\n{routes}Content-Length: 0\n\n"
    )
    return text.replace("\n", "\r\n").encode()


def answer(callee: Peer, request: Request, status: int, body: bytes = b"") -> bytes:
    headers = [("Contact", f"<sip:uas@127.0.0.1:{callee.port}>")]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return bytes(make_response(request, status, None, to_tag="uas1", headers=headers, body=body))


def route_with_media(
    callee: Peer,
) -> Callable[[router_pb2.RouteRequest], Awaitable[router_pb2.Decision]]:
    """The router of these tests: INVITE relayed with Record-Route and MANAGE, the
    in-dialog requests along their Route (BYE with MANAGE too, as NATMANAGE does)."""

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        msg = parse_message(req.message.raw)
        assert isinstance(msg, Request)
        if msg.method == "INVITE":
            decision = relay_to(callee.port, record_route=True)
            decision.media_ops.append(MANAGE)
            return decision
        decision = router_pb2.Decision(relay=router_pb2.Relay())
        if msg.method == "BYE":
            decision.media_ops.append(MANAGE)
        return decision

    return decide


async def sessions(relay: MediaRelayService) -> int:
    reply = await relay.list_sessions(media_relay_pb2.ListSessionsRequest())
    return reply.total


async def until_sessions(relay: MediaRelayService, wanted: int) -> int:
    for _ in range(100):
        total = await sessions(relay)
        if total == wanted:
            return total
        await asyncio.sleep(0.02)
    return await sessions(relay)


async def test_call_media_through_relay_both_ways_and_deleted_on_bye(
    udp_peers: PeerFactory, relay: MediaRelayService
) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    phone_a, phone_b = Endpoint.open(), Endpoint.open()
    router = FakeRouter(route_with_media(callee))
    edge = await start_edge(router, media_relay=relay)
    try:
        port = udp_port(edge)
        caller.send(invite_bytes(caller, "call-media-1", sdp("127.0.0.1", phone_a.port)), port)
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        to_relay_from_b = media_target(invite.body)
        assert to_relay_from_b[1] != phone_a.port  # the callee is sent to the relay
        assert relay.config.port_min <= to_relay_from_b[1] <= relay.config.port_max
        callee.send(answer(callee, invite, 200, sdp("127.0.0.1", phone_b.port)), port)
        ok = await caller.next_response()
        assert ok.status == 200
        to_relay_from_a = media_target(ok.body)
        assert to_relay_from_a[1] != phone_b.port
        assert relay.config.port_min <= to_relay_from_a[1] <= relay.config.port_max
        assert await sessions(relay) == 1
        # the callee answered once: exactly one router call per request (no handlers)
        assert router.kinds() == [router_pb2.ROUTE_KIND_REQUEST]

        caller.send(in_dialog("ACK", caller, ok, 1), port)
        assert (await callee.next_request()).method == "ACK"
        # RTP both ways through the relay's ports.
        phone_a.send(rtp(1), ("127.0.0.1", to_relay_from_a[1]))
        data, _ = await phone_b.recv()
        assert data == rtp(1)
        phone_b.send(rtp(2), ("127.0.0.1", to_relay_from_b[1]))
        data, _ = await phone_a.recv()
        assert data == rtp(2)
        query = await relay.query(
            media_relay_pb2.QueryRequest(
                key=media_relay_pb2.MediaSessionKey(call_id="call-media-1")
            )
        )
        assert query.stats.packets >= 2

        caller.send(in_dialog("BYE", caller, ok, 2), port)
        bye = await callee.next_request()
        assert bye.method == "BYE"
        callee.send(answer(callee, bye, 200), port)
        assert (await caller.next_response()).status == 200
        assert await until_sessions(relay, 0) == 0
    finally:
        await edge.stop(0)
        phone_a.close()
        phone_b.close()


async def test_relay_down_fails_the_call_with_503_and_nothing_sent(
    udp_peers: PeerFactory, relay: MediaRelayService
) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    await relay.stop(0)  # the relay refuses every operation (Unavailable)
    edge = await start_edge(FakeRouter(route_with_media(callee)), media_relay=relay)
    try:
        caller.send(invite_bytes(caller, "call-media-2", sdp("127.0.0.1", 40000)), udp_port(edge))
        assert (await caller.next_response()).status == 100
        failed = await caller.next_response()
        assert failed.status == 503
        assert failed.get("Retry-After")
        with pytest.raises(TimeoutError):
            await callee.next(timeout=0.3)
        assert edge.core is not None
        assert [p.final_sent for p in edge.core.transactions.values()] == [503]
    finally:
        await edge.stop(0)


async def test_no_media_relay_configured_gives_503(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(FakeRouter(route_with_media(callee)))
    try:
        caller.send(invite_bytes(caller, "call-media-3", sdp("127.0.0.1", 40000)), udp_port(edge))
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 503
    finally:
        await edge.stop(0)


async def test_busy_callee_deletes_the_session(
    udp_peers: PeerFactory, relay: MediaRelayService
) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(FakeRouter(route_with_media(callee)), media_relay=relay)
    try:
        port = udp_port(edge)
        caller.send(invite_bytes(caller, "call-media-4", sdp("127.0.0.1", 40002)), port)
        invite = await callee.next_request()
        assert await sessions(relay) == 1
        callee.send(answer(callee, invite, 486), port)
        statuses = [(await caller.next_response()).status for _ in range(2)]
        assert statuses == [100, 486]
        assert await until_sessions(relay, 0) == 0
    finally:
        await edge.stop(0)


async def test_cancel_deletes_the_session(udp_peers: PeerFactory, relay: MediaRelayService) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(FakeRouter(route_with_media(callee)), media_relay=relay)
    try:
        port = udp_port(edge)
        caller.send(
            invite_bytes(caller, "call-media-5", sdp("127.0.0.1", 40004), branch="z9hG4bKcm5"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 180), port)
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 180
        cancel = request_text(
            "CANCEL",
            "sip:bob@sipmesh.test",
            caller.port,
            branch="z9hG4bKcm5",
            call_id="call-media-5",
        )
        caller.send(cancel, port)
        assert (await caller.next_response()).status == 200  # the CANCEL's
        cancel_out = await next_method(callee, "CANCEL")  # past INVITE retransmissions
        callee.send(answer(callee, cancel_out, 200), port)
        callee.send(answer(callee, invite, 487), port)  # relayed (RFC 3261 §16.10)
        assert (await caller.next_response()).status == 487
        assert await until_sessions(relay, 0) == 0
    finally:
        await edge.stop(0)


async def test_answer_refused_by_relay_fails_call_and_ends_callee_dialog(
    udp_peers: PeerFactory, relay: MediaRelayService
) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(FakeRouter(route_with_media(callee)), media_relay=relay)
    try:
        port = udp_port(edge)
        caller.send(invite_bytes(caller, "call-media-6", sdp("127.0.0.1", 40006)), port)
        invite = await callee.next_request()
        # Two m= lines answering a one-stream offer: the relay refuses (RFC 3264 §6).
        bad = sdp("127.0.0.1", 40008, video_port=40010)
        callee.send(answer(callee, invite, 200, bad), port)
        assert (await caller.next_response()).status == 100
        failed = await caller.next_response()
        assert failed.status == 500
        ack = await callee.next_request()
        bye = await callee.next_request()
        assert (ack.method, bye.method) == ("ACK", "BYE")
        assert ack.uri == bye.uri == f"sip:uas@127.0.0.1:{callee.port}"
        assert bye.to.tag == "uas1"
        assert bye.cseq.seq == invite.cseq.seq + 1
        assert ack.cseq.seq == invite.cseq.seq
        callee.send(answer(callee, bye, 200), port)
        assert await until_sessions(relay, 0) == 0
    finally:
        await edge.stop(0)


async def test_branch_route_media_op_and_rr_param_per_branch(
    udp_peers: PeerFactory, relay: MediaRelayService
) -> None:
    """The default script's way: MANAGE from branch_route, add_rr_param(";nat=yes")."""
    caller, callee = await udp_peers(), await udp_peers()
    phone_a = Endpoint.open()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        if req.kind == router_pb2.ROUTE_KIND_BRANCH:
            decision = router_pb2.Decision(
                proceed=router_pb2.Proceed(), record_route_params=";nat=yes"
            )
            decision.media_ops.append(MANAGE)
            return decision
        return relay_to(
            callee.port, record_route=True, handlers=router_pb2.Handlers(branch="manage_branch")
        )

    router = FakeRouter(decide)
    edge = await start_edge(router, media_relay=relay)
    try:
        port = udp_port(edge)
        caller.send(invite_bytes(caller, "call-media-7", sdp("127.0.0.1", phone_a.port)), port)
        invite = await callee.next_request()
        assert media_target(invite.body)[1] != phone_a.port
        assert "nat=yes" in invite.get_all("Record-Route")[0]
        assert router.kinds() == [router_pb2.ROUTE_KIND_REQUEST, router_pb2.ROUTE_KIND_BRANCH]
        assert router.calls[1].handler == "manage_branch"
        assert router.calls[1].branch_index == 0
        callee.send(answer(callee, invite, 200, sdp("127.0.0.1", 40020)), port)
        await caller.next_response()
        ok = await caller.next_response()
        assert ok.status == 200
        assert media_target(ok.body)[1] != 40020  # the branch's MANAGE armed the answer
    finally:
        await edge.stop(0)
        phone_a.close()
