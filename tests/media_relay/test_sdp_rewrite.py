"""Offer/answer rewriting: the SDPs seen by each side point at the relay."""

from __future__ import annotations

import pytest

from sipmesh.clients.errors import InvalidArgument, NotFound
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2
from sipmesh.media_relay.sdp_rewrite import SdpError, parse_flags
from sipmesh.media_relay.service import MediaRelayService
from sipmesh.sip.sdp import parse_sdp

from .conftest import sdp

Key = media_relay_pb2.MediaSessionKey


async def test_offer_and_answer_point_at_the_relay(relay: MediaRelayService) -> None:
    offer = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="c1", from_tag="a"),
            sdp=sdp("192.0.2.10", 5004, ice=True, direction="sendonly", video_port=5006),
            flags=["replace-origin"],
            source=common_pb2.Address(host="198.51.100.7", port=5060),
        )
    )
    sd = parse_sdp(offer.sdp)
    assert sd.connection is not None
    assert sd.connection.address == "127.0.0.1"
    assert sd.origin_address == "127.0.0.1"
    audio, video = sd.media
    assert audio.port != 5004
    assert audio.port % 2 == 0
    assert audio.rtcp is not None
    assert audio.rtcp.port == audio.port + 1
    assert video.port not in (5006, audio.port)
    assert audio.direction == "sendonly"  # preserved
    assert not audio.has_attribute("candidate")
    assert not audio.has_attribute("ice-ufrag")
    assert audio.attributes("rtpmap") == ["0 PCMU/8000", "101 telephone-event/8000"]
    # Without trust-address the caller's media address is the signalling source.
    stats = (await relay.query(media_relay_pb2.QueryRequest(key=Key(call_id="c1")))).stats
    assert stats.legs[0].streams[0].peer.host == "198.51.100.7"
    assert stats.legs[0].streams[0].peer.port == 5004

    answer = await relay.answer(
        media_relay_pb2.AnswerRequest(
            key=Key(call_id="c1", from_tag="a", to_tag="b"),
            sdp=sdp("203.0.113.5", 7078, direction="recvonly", video_port=0),
            flags=["trust-address"],
        )
    )
    sa = parse_sdp(answer.sdp)
    assert sa.connection is not None
    assert sa.connection.address == "127.0.0.1"
    assert sa.media[0].port == stats.legs[0].streams[0].local_rtp.port
    assert sa.media[0].direction == "recvonly"
    assert sa.media[1].port == 0  # rejected stream stays rejected (RFC 3264 §6)
    stats = (await relay.query(media_relay_pb2.QueryRequest(key=Key(call_id="c1")))).stats
    assert [leg.tag for leg in stats.legs] == ["a", "b"]
    assert stats.key.to_tag == "b"
    assert stats.legs[1].streams[0].peer.host == "203.0.113.5"  # trusted c=
    assert stats.legs[1].streams[0].local_rtp.port == audio.port


async def test_media_address_and_ice_keep_and_warnings(relay: MediaRelayService) -> None:
    reply = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="c2", from_tag="a"),
            sdp=sdp("192.0.2.10", 5004, ice=True),
            flags=["ICE=keep", "media-address=203.0.113.99", "frobnicate"],
        )
    )
    sd = parse_sdp(reply.sdp)
    assert sd.connection is not None
    assert sd.connection.address == "203.0.113.99"
    assert sd.media[0].has_attribute("candidate")
    assert any("frobnicate" in w for w in reply.warnings)


async def test_reinvite_keeps_ports(relay: MediaRelayService) -> None:
    first = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="c3", from_tag="a"), sdp=sdp("192.0.2.1", 4000)
        )
    )
    await relay.answer(
        media_relay_pb2.AnswerRequest(
            key=Key(call_id="c3", from_tag="a", to_tag="b"), sdp=sdp("192.0.2.2", 4002)
        )
    )
    again = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="c3", from_tag="a"), sdp=sdp("192.0.2.1", 4000, direction="sendonly")
        )
    )
    assert parse_sdp(again.sdp).media[0].port == parse_sdp(first.sdp).media[0].port
    # A re-INVITE from the callee: its offer is rewritten to the caller's ports.
    reverse = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="c3", from_tag="b"), sdp=sdp("192.0.2.2", 4002)
        )
    )
    stats = (await relay.query(media_relay_pb2.QueryRequest(key=Key(call_id="c3")))).stats
    assert parse_sdp(reverse.sdp).media[0].port == stats.legs[0].streams[0].local_rtp.port


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty SDP"),
        (b"hello", "expected '<letter>=<value>'"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n", "no m= line"),
        (b"v=0\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= connection address"),
        (b"v=0\r\nc=IN IP4 example.com\r\nm=audio 4000 RTP/AVP 0\r\n", "not an IP address"),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 99999 RTP/AVP 0\r\n", "bad port"),
    ],
)
async def test_malformed_sdp_is_answered_clearly(
    relay: MediaRelayService, body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"malformed SDP: .*{reason}"):
        await relay.offer(
            media_relay_pb2.OfferRequest(key=Key(call_id="bad", from_tag="a"), sdp=body)
        )
    assert len(relay.table) == 0  # nothing half-made is left


async def test_answer_without_offer_and_bad_flags(relay: MediaRelayService) -> None:
    with pytest.raises(NotFound, match="unknown call-id"):
        await relay.answer(
            media_relay_pb2.AnswerRequest(
                key=Key(call_id="none", from_tag="a", to_tag="b"), sdp=sdp("192.0.2.1", 4000)
            )
        )
    with pytest.raises(InvalidArgument, match="address-family must be IP4 or IP6"):
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="x", from_tag="a"),
                sdp=sdp("192.0.2.1", 4000),
                flags=["address-family=IPX"],
            )
        )
    with pytest.raises(InvalidArgument, match="needs a call-id"):
        await relay.offer(media_relay_pb2.OfferRequest(sdp=sdp("192.0.2.1", 4000)))


def test_flag_parsing() -> None:
    flags = parse_flags(["trust-address", "asymmetric", "replace-origin", "ICE=force", "RTP/AVP"])
    assert flags.trust_address
    assert not flags.symmetric
    assert flags.replace_origin
    assert flags.ice == "remove"
    assert flags.warnings == ["ICE=force is not supported; ICE lines removed"]
    with pytest.raises(SdpError, match="media-address"):
        parse_flags(["media-address=nope"])
