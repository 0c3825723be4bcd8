"""Message model: header list, accessors, edits and serialisation (RFC 3261 §7)."""

from __future__ import annotations

import pytest

from sipmesh.sip import CSeq, ParseError, Request, Response, parse_message

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, "
    b"SIP/2.0/TCP x.example.com:5070;received=192.0.2.4;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice A" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Record-Route: <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>\r\n"
    b'Contact: <sip:alice@pc33.atlanta.example.com>;expires=30;+sip.instance="<urn:uuid:1>"'
    b";reg-id=1;q=0.5\r\n"
    b"X-Custom: one\r\n"
    b"Content-Type: application/sdp\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)


def test_unmodified_message_is_byte_identical() -> None:
    msg = parse_message(INVITE)
    assert bytes(msg) == INVITE


def test_typed_accessors() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.top_via is not None
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert [v.transport for v in msg.vias] == ["UDP", "TCP"]
    assert msg.vias[1].port == 5070
    assert msg.vias[1].received == "192.0.2.4"
    assert msg.vias[1].rport == ""
    assert msg.from_.display_name == "Alice A"
    assert msg.from_.tag == "1928301774"
    assert msg.to.tag is None
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert msg.max_forwards == 70
    assert msg.content_length == 5
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\r\n"
    contact = msg.contacts[0]
    assert contact.expires == 30
    assert contact.q == 0.5
    assert contact.instance == "<urn:uuid:1>"
    assert contact.reg_id == 1
    assert [str(r.uri) for r in msg.record_routes] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]


def test_compact_and_case_insensitive_names() -> None:
    msg = parse_message(INVITE)
    assert msg.get("content-length") == "5"
    assert msg.get("L") == "5"
    assert "v" in msg
    assert "VIA" in msg
    assert "x-custom" in msg
    assert "Subject" not in msg


def test_get_all_splits_lists_only() -> None:
    msg = parse_message(INVITE)
    assert len(msg.get_all("Via")) == 2
    assert msg.get("via") == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"
    msg.add("WWW-Authenticate", 'Digest realm="a", nonce="b", qop="auth,auth-int"')
    assert msg.get_all("www-authenticate") == ['Digest realm="a", nonce="b", qop="auth,auth-int"']


def test_pop_first_keeps_rest_of_comma_list() -> None:
    msg = parse_message(INVITE)
    top = msg.pop_first("Via")
    assert top == "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"
    assert msg.top_via is not None
    assert msg.top_via.host == "x.example.com"
    assert len(msg.vias) == 1
    assert b"Via: SIP/2.0/TCP x.example.com:5070" in bytes(msg)


def test_edits_invalidate_caches_and_serialise_canonically() -> None:
    msg = parse_message(INVITE)
    assert msg.top_via is not None
    msg.add("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew", first=True)
    assert msg.top_via is not None
    assert msg.top_via.branch == "z9hG4bKnew"
    msg.set("Max-Forwards", "69")
    assert msg.max_forwards == 69
    assert msg.remove("Record-Route") == 2
    assert msg.record_routes == []
    out = bytes(msg)
    assert out.startswith(b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP proxy")
    again = parse_message(out)
    assert again.max_forwards == 69
    assert again.body == b"v=0\r\n"
    assert [h[0] for h in again.headers][-3:] == ["X-Custom", "Content-Type", "l"]


def test_request_uri_is_cached_and_invalidated() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.ruri.user == "bob"  # type: ignore[union-attr]
    msg.uri = "sip:carol@chicago.example.com"
    assert msg.ruri.user == "carol"  # type: ignore[union-attr]
    assert bytes(msg).startswith(b"INVITE sip:carol@chicago.example.com SIP/2.0\r\n")


def test_body_setter_updates_content_length() -> None:
    msg = parse_message(INVITE)
    msg.body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    assert msg.content_length == len(msg.body)
    assert parse_message(bytes(msg)).body == msg.body


def test_build_request_and_response() -> None:
    req = Request(
        "OPTIONS",
        "sip:example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
            ("From", "<sip:a@example.com>;tag=x"),
            ("To", "<sip:example.com>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 OPTIONS"),
        ],
    )
    parsed = parse_message(bytes(req))
    assert isinstance(parsed, Request)
    assert parsed.cseq.method == "OPTIONS"
    resp = Response(200, "OK", req.headers)
    again = parse_message(bytes(resp))
    assert isinstance(again, Response)
    assert again.status == 200
    assert again.reason == "OK"
    assert again.call_id == "c1"


def test_missing_header_raises_parse_error() -> None:
    req = Request("OPTIONS", "sip:example.com")
    with pytest.raises(ParseError):
        _ = req.from_
    assert req.top_via is None
    assert req.max_forwards is None


def test_copy_is_independent_and_keeps_parsed_values() -> None:
    original = parse_message(INVITE)
    assert isinstance(original, Request)
    via = original.top_via  # parsed once, shared by the copy
    clone = original.copy()
    assert isinstance(clone, Request)
    assert bytes(clone) == bytes(original) == INVITE
    assert clone.method == "INVITE"
    assert clone.uri == original.uri
    assert clone.top_via is via
    assert clone.to.uri.user == "bob"
    clone.add("X-Added", "yes")
    clone.uri = "sip:carol@chicago.example.com"
    assert "X-Added" not in original
    assert original.uri == "sip:bob@biloxi.example.com"
    assert bytes(original) == INVITE
    assert b"X-Added: yes" in bytes(clone)
    assert clone.vias is not original.vias
    clone.remove("Via")
    assert clone.top_via is None
    assert original.top_via is via


def test_copy_of_a_response() -> None:
    response = Response(180, "Ringing", [("CSeq", "1 INVITE"), ("Content-Length", "0")])
    clone = response.copy()
    clone.reason = "Still Ringing"
    assert response.reason == "Ringing"
    assert clone.status == 180
    assert clone.cseq.method == "INVITE"
    assert bytes(clone).startswith(b"SIP/2.0 180 Still Ringing\r\n")
