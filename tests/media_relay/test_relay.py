"""RTP/RTCP through the relay between two UDP sockets standing in for phones."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipmesh.clients.errors import ResourceExhausted
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2
from sipmesh.media_relay.service import MediaRelayService

from .conftest import Endpoint, media_target, relay_config, rtcp_sr, rtp, sdp

Key = media_relay_pb2.MediaSessionKey


async def call(
    relay: MediaRelayService,
    caller: Endpoint,
    callee: Endpoint,
    *,
    call_id: str = "call-1",
    caller_sdp_port: int | None = None,
    mux: bool = False,
    flags: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> tuple[tuple[str, int, int], tuple[str, int, int]]:
    """Offer from caller, answer from callee; returns (where the callee sends, where
    the caller sends) as written in the rewritten SDPs."""
    offer = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id=call_id, from_tag="ft"),
            sdp=sdp(host, caller_sdp_port or caller.port, rtcp_mux=mux),
            flags=["trust-address", *flags],
        )
    )
    answer = await relay.answer(
        media_relay_pb2.AnswerRequest(
            key=Key(call_id=call_id, from_tag="ft", to_tag="tt"),
            sdp=sdp(host, callee.port, rtcp_mux=mux),
            flags=["trust-address", *flags],
        )
    )
    return media_target(offer.sdp), media_target(answer.sdp)


async def stats(relay: MediaRelayService, call_id: str = "call-1") -> media_relay_pb2.SessionStats:
    reply = await relay.query(media_relay_pb2.QueryRequest(key=Key(call_id=call_id)))
    return reply.stats


async def test_rtp_flows_both_ways_and_is_counted(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, callee = endpoints(), endpoints()
    to_callee_side, to_caller_side = await call(relay, caller, callee)
    relay_for_caller = (to_caller_side[0], to_caller_side[1])
    relay_for_callee = (to_callee_side[0], to_callee_side[1])
    assert relay_for_caller[1] != caller.port
    assert relay_for_callee[1] != callee.port

    for seq in range(5):
        caller.send(rtp(seq), relay_for_caller)
        data, src = await callee.recv()
        assert data == rtp(seq)
        assert src[1] == relay_for_callee[1]  # symmetric: from the port it sends to
        callee.send(rtp(100 + seq), relay_for_callee)
        data, src = await caller.recv()
        assert data == rtp(100 + seq)
        assert src[1] == relay_for_caller[1]

    s = await stats(relay)
    assert s.packets == 10
    assert s.bytes == 10 * len(rtp(0))
    assert s.errors == 0
    assert s.last_packet_at > 0
    per_leg = {leg.tag: leg.streams[0] for leg in s.legs}
    assert per_leg["ft"].packets == 5
    assert per_leg["tt"].packets == 5
    assert per_leg["ft"].latched
    assert per_leg["tt"].latched
    assert relay.totals()[0] == 10


async def test_latching_learns_the_nat_port(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    # The caller's SDP names port A but it sends from port B (a NAT mapping):
    # before it sends, media for it goes to A; after, to B.
    advertised = endpoints()
    natted, callee = endpoints(), endpoints()
    _, to_caller_side = await call(relay, natted, callee, caller_sdp_port=advertised.port)
    to_callee_side = (await stats(relay)).legs[1].streams[0].local_rtp
    relay_for_callee = (to_callee_side.host, to_callee_side.port)

    callee.send(rtp(1), relay_for_callee)
    assert (await advertised.recv())[0] == rtp(1)

    natted.send(rtp(2), to_caller_side[:2])
    assert (await callee.recv())[0] == rtp(2)
    callee.send(rtp(3), relay_for_callee)
    assert (await natted.recv())[0] == rtp(3)
    assert await advertised.nothing()
    caller_leg = (await stats(relay)).legs[0].streams[0]
    assert caller_leg.latched
    assert caller_leg.peer.port == natted.port


async def test_relatch_on_nat_rebinding_same_ip(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, callee = endpoints(), endpoints()
    to_callee_side, to_caller_side = await call(relay, caller, callee)
    caller.send(rtp(1), to_caller_side[:2])
    await callee.recv()
    moved = endpoints()  # same IP, new port: the NAT rebinding of the caller
    moved.send(rtp(2), to_caller_side[:2])
    assert (await callee.recv())[0] == rtp(2)
    callee.send(rtp(3), to_callee_side[:2])
    assert (await moved.recv())[0] == rtp(3)
    assert await caller.nothing()


async def test_strict_mode_drops_strangers(endpoints: Callable[..., Endpoint]) -> None:
    relay = MediaRelayService(relay_config(strictness="strict"))
    await relay.start()
    try:
        caller, callee, stranger = endpoints(), endpoints(), endpoints()
        to_callee_side, to_caller_side = await call(relay, caller, callee)
        caller.send(rtp(1), to_caller_side[:2])
        assert (await callee.recv())[0] == rtp(1)
        stranger.send(rtp(66), to_caller_side[:2])
        assert await callee.nothing()
        caller.send(rtp(2), to_caller_side[:2])
        assert (await callee.recv())[0] == rtp(2)  # the latched caller still works
        callee.send(rtp(3), to_callee_side[:2])
        assert (await caller.recv())[0] == rtp(3)
        assert await stranger.nothing(0.1)
        s = await stats(relay)
        assert s.errors == 1
        # A new offer (re-INVITE) resets the latch: the new address is learned.
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="call-1", from_tag="ft"),
                sdp=sdp("127.0.0.1", stranger.port),
                flags=["trust-address"],
            )
        )
        stranger.send(rtp(4), to_caller_side[:2])
        assert (await callee.recv())[0] == rtp(4)
    finally:
        await relay.stop(0)


async def test_separate_rtcp_goes_port_plus_one(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, callee = endpoints(), endpoints()
    caller_rtcp, callee_rtcp = endpoints(), endpoints()
    # RFC 3605 a=rtcp is absent: RTCP goes to RTP port + 1; we bind the endpoints'
    # RTCP sockets on a=rtcp ports instead by sending through the relay from them.
    to_callee_side, to_caller_side = await call(relay, caller, callee)
    assert to_caller_side[2] == to_caller_side[1] + 1
    # The caller's RTCP socket sends first: the relay latches it and forwards to the
    # callee's SDP address, port + 1 (nobody listens there).
    caller_rtcp.send(rtcp_sr(), (to_caller_side[0], to_caller_side[2]))
    await caller_rtcp.nothing(0.1)
    # The callee's RTCP socket sends: it goes to the caller's latched RTCP socket,
    # from the relay's RTCP port (symmetric).
    callee_rtcp.send(rtcp_sr() + b"y", (to_callee_side[0], to_callee_side[2]))
    data, src = await caller_rtcp.recv()
    assert data == rtcp_sr() + b"y"
    assert src[1] == to_caller_side[2]
    caller_rtcp.send(rtcp_sr() + b"x", (to_caller_side[0], to_caller_side[2]))
    data, src = await callee_rtcp.recv()
    assert data == rtcp_sr() + b"x"
    assert src[1] == to_callee_side[2]
    assert await caller.nothing(0.1)  # RTCP did not go to the RTP sockets


async def test_rtcp_mux_on_one_port(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, callee = endpoints(), endpoints()
    to_callee_side, to_caller_side = await call(relay, caller, callee, mux=True)
    # RFC 5761 §5.1.3: a=rtcp names the RTP port
    assert to_caller_side[2] == to_caller_side[1]
    assert to_callee_side[2] == to_callee_side[1]
    caller.send(rtp(1), to_caller_side[:2])
    assert (await callee.recv())[0] == rtp(1)
    caller.send(rtcp_sr(), to_caller_side[:2])
    data, src = await callee.recv()
    assert data == rtcp_sr()
    assert src[1] == to_callee_side[1]
    callee.send(rtcp_sr() + b"z", to_callee_side[:2])
    assert (await caller.recv())[0] == rtcp_sr() + b"z"


async def test_ipv4_caller_to_ipv6_callee(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, callee = endpoints("127.0.0.1"), endpoints("::1")
    offer = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="v6", from_tag="ft"),
            sdp=sdp("127.0.0.1", caller.port),
            flags=["trust-address", "address-family=IP6"],
        )
    )
    assert b"c=IN IP6 ::1" in offer.sdp
    answer = await relay.answer(
        media_relay_pb2.AnswerRequest(
            key=Key(call_id="v6", from_tag="ft", to_tag="tt"),
            sdp=sdp("::1", callee.port),
            flags=["trust-address"],
        )
    )
    assert b"c=IN IP4 127.0.0.1" in answer.sdp
    to_callee_side, to_caller_side = media_target(offer.sdp), media_target(answer.sdp)
    caller.send(rtp(1), to_caller_side[:2])
    assert (await callee.recv())[0] == rtp(1)
    callee.send(rtp(2), to_callee_side[:2])
    assert (await caller.recv())[0] == rtp(2)


async def test_port_exhaustion_is_clear_and_others_keep_working(
    endpoints: Callable[..., Endpoint],
) -> None:
    low = 41000 + 2 * (hash("exhaust") % 500)
    # 4 ports = 2 pairs = exactly one call (one pair per party)
    relay = MediaRelayService(relay_config(port_min=low, port_max=low + 3))
    await relay.start()
    try:
        caller, callee = endpoints(), endpoints()
        _to_callee_side, to_caller_side = await call(relay, caller, callee)
        with pytest.raises(ResourceExhausted, match="no free RTP/RTCP port pair"):
            await relay.offer(
                media_relay_pb2.OfferRequest(
                    key=Key(call_id="call-2", from_tag="x"),
                    sdp=sdp("127.0.0.1", 4000),
                    source=common_pb2.Address(host="127.0.0.1"),
                )
            )
        caller.send(rtp(1), to_caller_side[:2])
        assert (await callee.recv())[0] == rtp(1)
        listed = await relay.list_sessions(media_relay_pb2.ListSessionsRequest())
        assert [s.key.call_id for s in listed.sessions] == ["call-1"]
        # Deleting frees the ports for the next call.
        await relay.delete(media_relay_pb2.DeleteRequest(key=Key(call_id="call-1")))
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="call-2", from_tag="x"), sdp=sdp("127.0.0.1", 4000)
            )
        )
    finally:
        await relay.stop(0)


async def test_session_limit(endpoints: Callable[..., Endpoint]) -> None:
    relay = MediaRelayService(relay_config(max_sessions=1))
    await relay.start()
    try:
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="a", from_tag="1"), sdp=sdp("127.0.0.1", 4000)
            )
        )
        with pytest.raises(ResourceExhausted, match="session limit"):
            await relay.offer(
                media_relay_pb2.OfferRequest(
                    key=Key(call_id="b", from_tag="1"), sdp=sdp("127.0.0.1", 4000)
                )
            )
        ping = await relay.ping(media_relay_pb2.RelayPingRequest())
        assert ping.sessions == 1
        assert ping.free_ports > 0
    finally:
        await relay.stop(0)


async def test_forked_early_media_with_via_branch(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    caller, fork1, fork2 = endpoints(), endpoints(), endpoints()
    targets = {}
    for branch in ("z9hG4bK1", "z9hG4bK2"):
        offer = await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="fork", from_tag="ft", via_branch=branch),
                sdp=sdp("127.0.0.1", caller.port),
                flags=["trust-address"],
            )
        )
        targets[branch] = media_target(offer.sdp)
    assert targets["z9hG4bK1"][1] != targets["z9hG4bK2"][1]  # separate ports per fork
    answers = {}
    for branch, tag, ep in (("z9hG4bK1", "t1", fork1), ("z9hG4bK2", "t2", fork2)):
        reply = await relay.answer(
            media_relay_pb2.AnswerRequest(
                key=Key(call_id="fork", from_tag="ft", to_tag=tag, via_branch=branch),
                sdp=sdp("127.0.0.1", ep.port),
                flags=["trust-address"],
            )
        )
        answers[tag] = media_target(reply.sdp)
    # Early media of both forks reaches the caller.
    fork1.send(rtp(1), targets["z9hG4bK1"][:2])
    assert (await caller.recv())[0] == rtp(1)
    fork2.send(rtp(2), targets["z9hG4bK2"][:2])
    assert (await caller.recv())[0] == rtp(2)
    # The caller's media goes to the fork that answered last.
    caller.send(rtp(3), answers["t2"][:2])
    assert (await fork2.recv())[0] == rtp(3)
    assert await fork1.nothing(0.1)
    # CANCEL of the other fork removes only it.
    await relay.delete(
        media_relay_pb2.DeleteRequest(key=Key(call_id="fork", via_branch="z9hG4bK1"))
    )
    s = await stats(relay, "fork")
    assert sorted(leg.tag for leg in s.legs) == ["ft", "t2"]
    caller.send(rtp(4), answers["t2"][:2])
    assert (await fork2.recv())[0] == rtp(4)
