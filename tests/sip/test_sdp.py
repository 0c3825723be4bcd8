"""SDP model: byte-exact round trips and the edits a media relay makes."""

from __future__ import annotations

import pytest

from sipmesh.sip.sdp import Connection, Rtcp, SdpError, SdpLine, parse_sdp

# A WebRTC-ish offer with ICE, rtcp-mux, unknown attributes and an unknown line type.
OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 198.51.100.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.1\r\n"
    b"t=0 0\r\n"
    b"a=ice-options:trickle\r\n"
    b"a=x-vendor:keep me\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=candidate:1 1 UDP 2130706431 198.51.100.1 49170 typ host\r\n"
    b"a=ice-ufrag:F7gI\r\n"
    b"a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    b"a=rtcp:49171\r\n"
    b"a=sendonly\r\n"
    b"y=unknown line type\r\n"
    b"a=end-of-candidates\r\n"
    b"m=video 51372/2 RTP/AVP 99\r\n"
    b"c=IN IP6 2001:db8::1\r\n"
    b"a=rtcp-mux\r\n"
    b"a=remote-candidates:1 198.51.100.1 51372\r\n"
)


def test_unmodified_round_trip_is_byte_exact() -> None:
    sdp = parse_sdp(OFFER)
    assert bytes(sdp) == OFFER
    lf_only = OFFER.replace(b"\r\n", b"\n")
    assert bytes(parse_sdp(lf_only)) == lf_only
    no_final_eol = OFFER[:-2]
    assert bytes(parse_sdp(no_final_eol)) == no_final_eol
    trailing_blank = OFFER + b"\r\n"
    assert bytes(parse_sdp(trailing_blank)) == trailing_blank
    latin = b"v=0\r\ns=caf\xe9\r\n"  # not UTF-8: still preserved
    assert bytes(parse_sdp(latin)) == latin


def test_structure() -> None:
    sdp = parse_sdp(OFFER)
    assert [m.media for m in sdp.media] == ["audio", "video"]
    audio, video = sdp.media
    assert audio.port == 49170
    assert audio.port_count is None
    assert audio.proto == "RTP/AVP"
    assert audio.formats == ["0", "8", "101"]
    assert video.port == 51372
    assert video.port_count == 2
    assert sdp.connection == Connection("IN", "IP4", "198.51.100.1")
    assert sdp.media_connection(audio) == Connection("IN", "IP4", "198.51.100.1")
    assert sdp.media_connection(video) == Connection("IN", "IP6", "2001:db8::1")
    assert sdp.origin_address == "198.51.100.1"
    assert sdp.attributes("x-vendor") == ["keep me"]
    assert audio.attributes("rtpmap") == ["0 PCMU/8000"]
    assert video.attributes("rtcp-mux") == [None]
    assert SdpLine("a", "rtcp-mux").attribute == ("rtcp-mux", None)
    assert SdpLine("c", "x").attribute is None


def test_connection_rewrite_session_and_media() -> None:
    sdp = parse_sdp(OFFER)
    sdp.set_connection("203.0.113.9")
    sdp.media[1].set_connection("203.0.113.9")
    out = bytes(sdp)
    assert b"c=IN IP4 203.0.113.9\r\nt=0 0" in out
    assert b"m=video 51372/2 RTP/AVP 99\r\nc=IN IP4 203.0.113.9\r\n" in out
    assert b"198.51.100.1\r\nt=" not in out
    # the rest is untouched
    assert out.replace(b"203.0.113.9", b"X") == OFFER.replace(
        b"c=IN IP4 198.51.100.1", b"c=IN IP4 X"
    ).replace(b"c=IN IP6 2001:db8::1", b"c=IN IP4 X")


def test_set_connection_adds_line_in_rfc_order_and_keeps_multicast_suffix() -> None:
    sdp = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n")
    sdp.media[0].set_connection("2001:db8::5")
    sdp.set_connection("192.0.2.1")
    assert bytes(sdp) == (
        b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 1 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n"
    )
    mc = parse_sdp(b"v=0\r\nc=IN IP4 224.2.36.42/127/3\r\n")
    assert mc.connection == Connection("IN", "IP4", "224.2.36.42", "/127/3")
    mc.set_connection("224.2.1.1")
    assert bytes(mc) == b"v=0\r\nc=IN IP4 224.2.1.1/127/3\r\n"


def test_set_all_connections_and_origin() -> None:
    sdp = parse_sdp(OFFER)
    sdp.set_all_connections("192.0.2.7")
    sdp.set_origin_address("192.0.2.7")
    assert sdp.connection == Connection("IN", "IP4", "192.0.2.7")
    assert sdp.media[1].connection == Connection("IN", "IP4", "192.0.2.7")
    assert sdp.media[0].connection is None
    assert sdp.origin_address == "192.0.2.7"
    assert b"o=alice 2890844526 2890844526 IN IP4 192.0.2.7\r\n" in bytes(sdp)
    # no session c= but a media section without one: the session gets a c=
    bare = parse_sdp(b"v=0\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n")
    bare.set_all_connections("192.0.2.8")
    assert bare.media_connection(bare.media[0]) == Connection("IN", "IP4", "192.0.2.8")


def test_media_port() -> None:
    sdp = parse_sdp(OFFER)
    sdp.media[0].set_port(30000)
    sdp.media[1].set_port(30002)
    assert sdp.media[0].port == 30000
    assert sdp.media[1].port == 30002
    out = bytes(sdp)
    assert b"m=audio 30000 RTP/AVP 0 8 101\r\n" in out
    assert b"m=video 30002/2 RTP/AVP 99\r\n" in out
    with pytest.raises(SdpError):
        sdp.media[0].set_port(70000)


def test_rtcp_attribute() -> None:
    sdp = parse_sdp(OFFER)
    audio, video = sdp.media
    assert audio.rtcp == Rtcp(49171)
    assert video.rtcp is None
    audio.set_rtcp(30001, "192.0.2.1")
    assert audio.rtcp == Rtcp(30001, "IN", "IP4", "192.0.2.1")
    assert b"a=rtcp:30001 IN IP4 192.0.2.1\r\na=sendonly\r\n" in bytes(sdp)
    video.set_rtcp(30003)
    assert video.lines[-1] == SdpLine("a", "rtcp:30003")
    assert audio.remove_rtcp() == 1
    assert audio.attributes("rtcp") == []
    assert Rtcp.parse("53020 IN IP6 2001:2345:6789:ABCD:EF01:2345:6789:ABCD").addrtype == "IP6"
    for bad in ["", "x", "1 IN IP4", "99999"]:
        with pytest.raises(SdpError):
            Rtcp.parse(bad)


def test_rtcp_mux() -> None:
    sdp = parse_sdp(OFFER)
    assert not sdp.media[0].rtcp_mux
    assert sdp.media[1].rtcp_mux


def test_direction() -> None:
    sdp = parse_sdp(OFFER)
    audio, video = sdp.media
    assert audio.direction == "sendonly"
    assert video.direction is None
    assert sdp.direction is None
    assert sdp.effective_direction(video) == "sendrecv"
    sdp.set_direction("inactive")
    assert sdp.effective_direction(video) == "inactive"
    assert sdp.effective_direction(audio) == "sendonly"
    audio.set_direction("recvonly")
    assert b"a=rtcp:49171\r\na=recvonly\r\n" in bytes(sdp)
    audio.set_direction(None)
    assert sdp.media[0].direction is None
    assert b"a=recvonly" not in bytes(sdp)
    with pytest.raises(SdpError):
        audio.set_direction("both")
    # contradictory duplicates collapse into one
    dup = parse_sdp(b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=sendonly\r\na=x\r\na=recvonly\r\n")
    dup.media[0].set_direction("sendrecv")
    assert bytes(dup) == b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=sendrecv\r\na=x\r\n"


def test_remove_ice() -> None:
    sdp = parse_sdp(OFFER)
    removed = sdp.remove_ice()
    assert removed == 6
    out = bytes(sdp)
    for gone in (b"candidate", b"ice-", b"end-of-candidates", b"remote-candidates"):
        assert gone not in out
    for kept in (b"a=x-vendor:keep me", b"y=unknown line type", b"a=rtcp-mux", b"a=rtpmap"):
        assert kept in out
    assert out.endswith(b"a=rtcp-mux\r\n")


def test_remove_last_line_without_eol_keeps_break() -> None:
    sdp = parse_sdp(b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=candidate:1")
    assert sdp.remove_ice() == 1
    assert bytes(sdp) == b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"
    tail = parse_sdp(b"v=0\r\nm=audio 1 RTP/AVP 0")
    tail.media[0].add_attribute("rtcp-mux")
    assert bytes(tail) == b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtcp-mux\r\n"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"o=- 1 1 IN IP4 1.2.3.4\r\nv=0\r\n", "v=0"),
        (b"v=1\r\n", "v=0"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2"),
        (b"v=0\r\n\r\ns=-\r\n", "line 2"),
        (b"v=0\r\nm=audio\r\n", "m="),
        (b"v=0\r\nm=audio x RTP/AVP 0\r\n", "port"),
        (b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n", "port"),
        (b"v=0\r\nm=audio 5/x RTP/AVP 0\r\n", "port"),
        (b"v=0\r\nc=IN IP4\r\n", "line 2"),
    ],
)
def test_malformed_raises_sdp_error(body: bytes, fragment: str) -> None:
    with pytest.raises(SdpError, match=fragment):
        parse_sdp(body)


def test_sdp_error_is_value_error_and_str_input() -> None:
    assert issubclass(SdpError, ValueError)
    sdp = parse_sdp("v=0\r\ns=ünïcode\r\n")
    assert str(sdp) == "v=0\r\ns=ünïcode\r\n"
    assert bytes(sdp) == "v=0\r\ns=ünïcode\r\n".encode()
    with pytest.raises(SdpError):
        sdp.set_origin_address("1.2.3.4")
