"""Stateless responses (§8.2.6), received/rport (§18.2.1, RFC 3581), CANCEL, ACK."""

from __future__ import annotations

import pytest

from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.stateless import (
    apply_received,
    make_ack,
    make_cancel,
    make_response,
    reason_phrase,
    stateless_to_tag,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bKp1, SIP/2.0/UDP x.example.org\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:p1.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Timestamp: 54\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def invite() -> Request:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    return msg


def test_make_response_copies_and_tags() -> None:
    req = invite()
    resp = make_response(req, 486, to_tag="xyz", headers=[("Retry-After", "30")])
    assert resp.status == 486
    assert resp.reason == "Busy Here"
    assert resp.get_all("Via") == req.get_all("Via")
    assert len(resp.vias) == 3
    assert resp.get("From") == req.get("From")
    assert resp.to.tag == "xyz"
    assert resp.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=xyz"
    assert resp.call_id == req.call_id
    assert resp.get("CSeq") == "314159 INVITE"
    assert resp.get("Retry-After") == "30"
    assert resp.get("Contact") is None
    assert resp.get("Timestamp") is None
    assert resp.content_length == 0
    reparsed = parse_message(bytes(resp))
    assert isinstance(reparsed, Response)
    assert reparsed.to.tag == "xyz"


def test_make_response_100_has_no_tag_but_timestamp() -> None:
    trying = make_response(invite(), 100)
    assert trying.to.tag is None
    assert trying.get("Timestamp") == "54"
    assert trying.reason == "Trying"


def test_stateless_to_tag_is_stable_across_retransmissions() -> None:
    a = make_response(invite(), 404)
    b = make_response(invite(), 404)
    assert a.to.tag == b.to.tag == stateless_to_tag(invite())
    other = invite()
    other.set("CSeq", "314160 INVITE")
    assert stateless_to_tag(other) != stateless_to_tag(invite())


def test_make_response_keeps_existing_to_tag_and_custom_reason() -> None:
    req = invite()
    req.set("To", "<sip:bob@biloxi.example.com>;tag=dlg")
    resp = make_response(req, 200, "Fine", to_tag="ignored", body=b"v=0\r\n")
    assert resp.to.tag == "dlg"
    assert resp.reason == "Fine"
    assert resp.body == b"v=0\r\n"
    assert resp.content_length == 5


def test_reason_phrase_fallbacks() -> None:
    assert reason_phrase(183) == "Session Progress"
    assert reason_phrase(299) == "OK"
    assert reason_phrase(499) == "Client Error"
    assert reason_phrase(699) == "Global Failure"


def test_apply_received_rport_and_received() -> None:
    req = invite()
    assert apply_received(req, "192.0.2.44", 40123)
    top = req.top_via
    assert top is not None
    assert top.rport == "40123"
    assert top.received == "192.0.2.44"
    assert top.branch == "z9hG4bK776asdhds"
    assert len(req.vias) == 3  # the others untouched
    assert req.vias[1].host == "proxy.example.net"


def test_apply_received_only_when_host_differs_without_rport() -> None:
    req = invite()
    req.pop_first("Via")
    assert req.top_via is not None
    assert not apply_received(req, "proxy.example.net", 5060)
    assert req.top_via.received is None
    assert apply_received(req, "198.51.100.7", 5060)
    top = req.top_via
    assert top is not None
    assert top.received == "198.51.100.7"
    assert top.rport is None
    v6 = Request(
        "OPTIONS", "sip:x", [("Via", "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport")]
    )
    assert apply_received(v6, "2001:db8::1", 5070)
    top6 = v6.top_via
    assert top6 is not None
    assert top6.rport == "5070"
    assert top6.received == "2001:db8::1"
    assert not apply_received(Request("OPTIONS", "sip:x"), "1.2.3.4", 1)


def test_make_cancel_rfc3261_9_1() -> None:
    req = invite()
    cancel = make_cancel(req)
    assert cancel.method == "CANCEL"
    assert cancel.uri == req.uri
    assert cancel.get_all("Via") == [req.get_all("Via")[0]]
    assert cancel.get_all("Route") == ["<sip:p1.example.com;lr>"]
    assert cancel.get("To") == req.get("To")
    assert cancel.get("From") == req.get("From")
    assert cancel.call_id == req.call_id
    assert cancel.cseq.seq == 314159
    assert cancel.cseq.method == "CANCEL"
    assert cancel.max_forwards == 70
    with pytest.raises(ValueError, match="Via"):
        make_cancel(Request("INVITE", "sip:x", [("CSeq", "1 INVITE")]))


def test_make_ack_rfc3261_17_1_1_3() -> None:
    req = invite()
    resp = make_response(req, 404, to_tag="t404")
    ack = make_ack(req, resp)
    assert ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.get_all("Via") == [req.get_all("Via")[0]]
    assert ack.to.tag == "t404"
    assert ack.get("From") == req.get("From")
    assert ack.get_all("Route") == req.get_all("Route")
    assert ack.cseq.seq == 314159
    assert ack.cseq.method == "ACK"
    assert ack.get("Contact") is None
    with pytest.raises(ValueError, match="non-2xx"):
        make_ack(req, make_response(req, 200))
