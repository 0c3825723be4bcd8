"""The caller's CANCEL in the proxy core (services/edge/cancels.py), over real UDP
sockets on 127.0.0.1 with a scripted router: answered 200 at once, carried to the
branches (RFC 3261 §16.10, §9.1), the callee's 487 relayed (§16.7), a 2xx racing
the CANCEL relayed, and a local 487 only when nothing downstream answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sipmesh.edge.service import EdgeService
from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import Request, Response

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port

PeerFactory = Callable[[], Awaitable[Peer]]


def cancel_of(invite_text: str) -> str:
    """The caller's CANCEL of ``invite_text`` (§9.1: same R-URI, Call-ID, tags, CSeq
    number and Via branch)."""
    return invite_text.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL")


async def next_method(peer: Peer, method: str) -> Request:
    """The next request ``method`` at ``peer``, past retransmissions of the INVITE and
    CANCEL sent before it (timers A and E, T1 = 50 ms here)."""
    while True:
        request = await peer.next_request()
        if request.method == method:
            return request
        assert request.method in ("INVITE", "CANCEL"), request.method


async def final_for(peer: Peer, method: str) -> Response:
    """The next final response to ``method`` at ``peer``, past provisionals."""
    while True:
        response = await peer.next_response()
        if response.cseq.method == method and response.status >= 200:
            return response


def finals(messages: list[Request | Response]) -> list[Response]:
    return [m for m in messages if isinstance(m, Response) and m.status >= 200]


async def relaying_edge(callee: Peer, **relay: Any) -> EdgeService:
    """An edge whose router relays every request to ``callee``."""

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(callee.port, **relay)

    return await start_edge(FakeRouter(decide))


async def invite_through(
    caller: Peer, callee: Peer, port: int, branch: str, call_id: str | None = None
) -> tuple[str, Request]:
    """The caller's INVITE sent through the edge: 100 Trying back to the caller, the
    INVITE at the callee. Returns the INVITE's text (to CANCEL it) and what arrived."""
    text = request_text(
        "INVITE", "sip:bob@sipmesh.test", caller.port, branch=branch, call_id=call_id
    )
    caller.send(text, port)
    assert (await caller.next_response()).status == 100
    return text, await callee.next_request()


async def test_cancel_is_sent_to_every_branch_and_the_callees_487_relayed(
    udp_peers: PeerFactory,
) -> None:
    caller, b1, b2 = await udp_peers(), await udp_peers(), await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return relay_to(b1.port, b2.port)

    edge = await start_edge(FakeRouter(decide))
    try:
        port = udp_port(edge)
        text = request_text("INVITE", "sip:bob@sipmesh.test", caller.port, branch="z9hG4bKc1")
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        inv1, inv2 = await b1.next_request(), await b2.next_request()
        b1.send(b1.reply(inv1, 180, "Ringing", "t1"), port)
        b2.send(b2.reply(inv2, 180, "Ringing", "t2"), port)
        assert (await caller.next_response()).status == 180
        assert (await caller.next_response()).status == 180
        caller.send(cancel_of(text), port)
        ok = await caller.next_response()
        assert (ok.status, ok.cseq.method) == (200, "CANCEL")
        cancels = [await next_method(b1, "CANCEL"), await next_method(b2, "CANCEL")]
        for cancel, inv in zip(cancels, (inv1, inv2), strict=True):
            assert cancel.top_via is not None
            assert inv.top_via is not None
            assert cancel.top_via.branch == inv.top_via.branch  # RFC 3261 §9.1
        b1.send(b1.reply(cancels[0], 200, "OK"), port)
        b1.send(b1.reply(inv1, 487, "Terminated By UAS 1", "t1"), port)
        assert (await next_method(b1, "ACK")).method == "ACK"  # the edge took the 487
        # One branch is still pending: nothing final for the INVITE yet (§16.7 step 6
        # waits for every branch).
        assert [r for r in finals(caller.pending()) if r.cseq.method == "INVITE"] == []
        b2.send(b2.reply(cancels[1], 200, "OK"), port)
        b2.send(b2.reply(inv2, 487, "Terminated By UAS 2", "t2"), port)
        assert (await next_method(b2, "ACK")).method == "ACK"
        final = await final_for(caller, "INVITE")
        # The callee's own 487, relayed: its reason phrase and To tag, not the edge's.
        assert (final.status, final.reason, final.to.tag) == (487, "Terminated By UAS 1", "t1")
        assert len(final.vias) == 1
    finally:
        await edge.stop(0)


async def test_branch_without_provisional_is_cancelled_when_it_rings(
    udp_peers: PeerFactory,
) -> None:
    """§9.1: no CANCEL before a provisional; the 180 that comes later gets it."""
    caller, callee = await udp_peers(), await udp_peers()

    edge = await relaying_edge(callee)
    try:
        port = udp_port(edge)
        text, invite = await invite_through(caller, callee, port, "z9hG4bKc2")
        caller.send(cancel_of(text), port)
        ok = await caller.next_response()
        assert (ok.status, ok.cseq.method) == (200, "CANCEL")
        early = [m for m in callee.pending() if isinstance(m, Request)]
        assert {m.method for m in early} <= {"INVITE"}  # retransmissions, no CANCEL
        callee.send(callee.reply(invite, 180, "Ringing", "t1"), port)
        cancel = await next_method(callee, "CANCEL")
        callee.send(callee.reply(cancel, 200, "OK"), port)
        callee.send(callee.reply(invite, 487, "Terminated By UAS", "t1"), port)
        final = await final_for(caller, "INVITE")
        assert (final.status, final.reason, final.to.tag) == (487, "Terminated By UAS", "t1")
    finally:
        await edge.stop(0)


async def test_2xx_after_the_cancel_is_relayed_and_the_call_goes_on(
    udp_peers: PeerFactory,
) -> None:
    """§16.7 step 5: a 2xx that crossed the CANCEL is forwarded; the caller ACKs it
    and hangs up with a BYE, both routed on to the callee."""
    caller, callee = await udp_peers(), await udp_peers()

    edge = await relaying_edge(callee)
    try:
        port = udp_port(edge)
        text, invite = await invite_through(caller, callee, port, "z9hG4bKc3", call_id="c3")
        callee.send(callee.reply(invite, 180, "Ringing", "t1"), port)
        assert (await caller.next_response()).status == 180
        caller.send(cancel_of(text), port)
        cancel = await next_method(callee, "CANCEL")
        callee.send(callee.reply(cancel, 200, "OK"), port)
        callee.send(callee.reply(invite, 200, "OK", "t1"), port)  # answered meanwhile
        got = [await caller.next_response(), await caller.next_response()]
        assert sorted((r.cseq.method, r.status) for r in got) == [("CANCEL", 200), ("INVITE", 200)]
        ok = next(r for r in got if r.cseq.method == "INVITE")
        assert ok.to.tag == "t1"
        dialog = (
            "From: <sip:alice@sipmesh.test>;tag=a1\nTo: <sip:bob@sipmesh.test>;tag=t1\n"
            "Call-ID: c3\nMax-Forwards: 70\nContent-Length: 0\n"
        )
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            caller.send(
                f"{method} sip:uas@127.0.0.1:{callee.port} SIP/2.0\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKc3{cseq};rport\n"
                f"CSeq: {cseq} {method}\n{dialog}\n",
                port,
            )
            request = await next_method(callee, method)
        callee.send(callee.reply(request, 200, "OK", "t1"), port)
        assert (await final_for(caller, "BYE")).status == 200
    finally:
        await edge.stop(0)


@pytest.mark.parametrize("rings", [True, False], ids=["ringing", "silent"])
async def test_cancelled_branch_that_never_answers_gives_487_after_its_timer(
    udp_peers: PeerFactory, rings: bool
) -> None:
    """A callee that ignores the CANCEL (or never answered at all): the branch gives
    up after fr_timer and the caller gets 487, not 408, as tm answers a cancelled
    transaction. Timer C (fr_inv_timer) is long here: the CANCELled branch waits
    fr_timer, not the rest of timer C."""
    caller, callee = await udp_peers(), await udp_peers()

    edge = await relaying_edge(callee, fr_timer_ms=500, fr_inv_timer_ms=60_000)
    try:
        port = udp_port(edge)
        text, invite = await invite_through(caller, callee, port, "z9hG4bKc4")
        if rings:
            callee.send(callee.reply(invite, 180, "Ringing", "t1"), port)
            assert (await caller.next_response()).status == 180
        caller.send(cancel_of(text), port)
        ok = await caller.next_response()
        assert (ok.status, ok.cseq.method) == (200, "CANCEL")
        # Not answered with the CANCEL: the INVITE waits for its branch.
        assert edge.core is not None
        assert [p.final_sent for p in edge.core.transactions.values() if p.invite] == [0]
        if rings:
            await next_method(callee, "CANCEL")  # and never answered
        final = await final_for(caller, "INVITE")
        assert (final.status, final.reason) == (487, "Request Terminated")
        assert final.to.tag not in (None, "", "t1")  # the edge's own (§8.2.6.2)
        if not rings:
            methods = {m.method for m in callee.pending() if isinstance(m, Request)}
            assert methods <= {"INVITE"}  # §9.1: a silent branch never gets a CANCEL
    finally:
        await edge.stop(0)


async def test_cancel_while_the_router_decides_gets_487_at_once(
    udp_peers: PeerFactory,
) -> None:
    """No branch yet: the edge answers 487 itself, and the decision that comes later
    is not carried out (no INVITE reaches the callee)."""
    caller, callee = await udp_peers(), await udp_peers()
    release = asyncio.Event()

    async def slow(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        await release.wait()
        return relay_to(callee.port)

    edge = await start_edge(FakeRouter(slow), router_timeout=10.0)
    try:
        port = udp_port(edge)
        text = request_text("INVITE", "sip:bob@sipmesh.test", caller.port, branch="z9hG4bKc5")
        caller.send(text, port)
        assert (await caller.next_response()).status == 100
        caller.send(cancel_of(text), port)
        got = {((r := await caller.next_response()).cseq.method, r.status) for _ in range(2)}
        assert got == {("CANCEL", 200), ("INVITE", 487)}
        release.set()  # the late decision relays to the callee...
        # ...but only the next call gets there: the first thing the callee receives.
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="c5b"), port
        )
        assert (await callee.next_request()).call_id == "c5b"
    finally:
        await edge.stop(0)


async def test_a_487_with_only_our_via_is_not_forwarded(udp_peers: PeerFactory) -> None:
    """§16.7 step 3: a callee that answers the INVITE with the Via of our CANCEL sends
    a response with no Via left once ours is removed: it was meant for the edge and
    is not forwarded; the caller gets a 487 of the edge's, on its own Via."""
    caller, callee = await udp_peers(), await udp_peers()

    edge = await relaying_edge(callee)
    try:
        port = udp_port(edge)
        text, invite = await invite_through(caller, callee, port, "z9hG4bKc9")
        callee.send(callee.reply(invite, 180, "Ringing", "t1"), port)
        assert (await caller.next_response()).status == 180
        caller.send(cancel_of(text), port)
        cancel = await next_method(callee, "CANCEL")
        assert len(cancel.vias) == 1  # the edge's own
        callee.send(callee.reply(cancel, 200, "OK"), port)
        wrong = callee.reply(cancel, 487, "Wrong Vias", "t1").replace(b"1 CANCEL", b"1 INVITE")
        callee.send(wrong, port)
        final = await final_for(caller, "INVITE")
        assert (final.status, final.reason) == (487, "Request Terminated")
        assert final.top_via is not None
        assert final.top_via.branch == "z9hG4bKc9"
    finally:
        await edge.stop(0)
