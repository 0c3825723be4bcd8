"""The rtpengine ng protocol driven over real UDP with a bencode client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from sipmesh.media_relay.bencode import decode, encode
from sipmesh.media_relay.ng import NgClient
from sipmesh.media_relay.service import MediaRelayService

from .conftest import Endpoint, media_target, rtp, sdp


async def client_for(relay: MediaRelayService) -> NgClient:
    assert relay.ng_address is not None
    return await NgClient.connect(*relay.ng_address)


async def test_ping_offer_answer_query_list_delete(
    relay: MediaRelayService, endpoints: Callable[..., Endpoint]
) -> None:
    ng = await client_for(relay)
    try:
        assert await ng.ping()
        caller, callee = endpoints(), endpoints()
        offer = await ng.command(
            "offer",
            call_id="ng-1",
            from_tag="a",
            sdp=sdp("10.0.0.5", 4000),  # a private address, as behind NAT
            received_from=["IP4", "127.0.0.1"],
            flags=["symmetric"],
            replace=["origin"],
            ICE="remove",
        )
        assert offer["result"] == b"ok"
        to_callee_side = media_target(offer["sdp"])
        assert to_callee_side[0] == "127.0.0.1"
        assert b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1" in offer["sdp"]
        answer = await ng.command(
            "answer",
            call_id="ng-1",
            from_tag="a",
            to_tag="b",
            sdp=sdp("127.0.0.1", callee.port),
            flags=["trust-address"],
        )
        assert answer["result"] == b"ok"
        to_caller_side = media_target(answer["sdp"])
        # received-from replaced the private address; latching then finds the port.
        caller.send(rtp(1), to_caller_side[:2])
        assert (await callee.recv())[0] == rtp(1)
        callee.send(rtp(2), to_callee_side[:2])
        assert (await caller.recv())[0] == rtp(2)

        query = await ng.command("query", call_id="ng-1", from_tag="a")
        assert query["result"] == b"ok"
        assert query["totals"]["RTP"]["packets"] == 2
        assert set(query["tags"]) == {"a", "b"}
        listed = await ng.command("list")
        assert listed["calls"] == [b"ng-1"]
        deleted = await ng.command("delete", call_id="ng-1", from_tag="a")
        assert deleted["result"] == b"ok"
        assert deleted["totals"]["RTP"]["bytes"] == 2 * len(rtp(0))
        assert (await ng.command("list"))["calls"] == []
        gone = await ng.command("query", call_id="ng-1")
        assert gone["result"] == b"error"
        assert b"unknown call-id" in gone["error-reason"]
    finally:
        ng.close()


async def test_malformed_commands_get_clear_errors(relay: MediaRelayService) -> None:
    ng = await client_for(relay)
    try:
        cases = [
            ({"command": "frob"}, b"Unrecognized command 'frob'"),
            ({"call-id": "x"}, b"'command' is missing"),
            ({"command": "offer", "from-tag": "a", "sdp": "v=0"}, b"'call-id' is missing"),
            ({"command": "offer", "call-id": "x", "from-tag": "a"}, b"'sdp' is missing"),
            (
                {"command": "offer", "call-id": "x", "from-tag": "a", "sdp": "nonsense"},
                b"malformed SDP",
            ),
            (
                {"command": "answer", "call-id": "x", "from-tag": "a", "sdp": "v=0\r\n"},
                b"'to-tag' is missing",
            ),
            ({"command": "list", "limit": "ten"}, b"'limit' must be"),
            ({"command": "offer", "call-id": ["x"], "sdp": "v=0"}, b"'call-id' must be a string"),
        ]
        for message, reason in cases:
            reply = decode(await ng.raw(encode(message), f"c{id(message)}".encode()))
            assert reply["result"] == b"error", message
            assert reason in reply["error-reason"], (message, reply)
        # Not bencode at all, and not a dictionary.
        reply = decode(await ng.raw(b"d7:command", b"bad1"))
        assert reply["result"] == b"error"
        assert reply["error-reason"].startswith(b"bencode:")
        reply = decode(await ng.raw(b"li1ee", b"bad2"))
        assert b"not a dictionary" in reply["error-reason"]
        # After all that the relay still answers.
        assert await ng.ping()
        assert relay.ng is not None
        assert relay.ng.errors >= len(cases) + 2
    finally:
        ng.close()


async def test_a_retransmitted_cookie_gets_the_cached_reply(relay: MediaRelayService) -> None:
    assert relay.ng_address is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        payload = b"k1 " + encode(
            {"command": "offer", "call-id": "rt", "from-tag": "a", "sdp": sdp("127.0.0.1", 4000)}
        )
        replies = []
        for _ in range(2):
            sock.sendto(payload, relay.ng_address)
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
            replies.append(data)
        assert replies[0] == replies[1]
        assert replies[0].startswith(b"k1 d")
        assert len(relay.table) == 1
        # A datagram without a cookie cannot be answered and is dropped.
        sock.sendto(b"nocookie", relay.ng_address)
        sock.sendto(b"k2 " + encode({"command": "ping"}), relay.ng_address)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
        assert data == b"k2 d6:result4:ponge"
    finally:
        sock.close()
