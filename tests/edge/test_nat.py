"""nathelper semantics: nat_uac_test 19, contact alias, keep-alive ownership table."""

from __future__ import annotations

from sipmesh.edge.nat import (
    KeepAliveTable,
    NatTest,
    add_contact_alias,
    is_private,
    keepalive_options,
    nat_uac_test,
    pop_ruri_alias,
)
from sipmesh.sip import Request, parse_message


def _invite(via: str, contact: str, ruri: str = "sip:b@example.com") -> Request:
    text = (
        f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKn;rport\r\n"
        "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_private_and_shared_ranges() -> None:
    assert is_private("192.168.1.2")
    assert is_private("10.1.2.3")
    assert is_private("172.20.0.1")
    assert is_private("100.64.1.1")  # RFC 6598
    assert not is_private("8.8.8.8")
    assert not is_private("127.0.0.1")
    assert not is_private("example.com")


def test_nat_detected_behind_nat() -> None:
    req = _invite("192.168.1.10:5060", "sip:a@192.168.1.10:5060")
    hit = nat_uac_test(req, "203.0.113.5", 40000)
    assert hit == NatTest.CONTACT_PRIVATE | NatTest.VIA_ADDRESS | NatTest.VIA_PORT


def test_no_nat_when_addresses_match() -> None:
    req = _invite("203.0.113.5:5060", "sip:a@203.0.113.5:5060")
    assert nat_uac_test(req, "203.0.113.5", 5060) == 0


def test_alias_added_and_handled_on_the_way_back() -> None:
    req = _invite("192.168.1.10:5060", "sip:a@192.168.1.10:5060")
    assert add_contact_alias(req, "203.0.113.5", 40000, "udp")
    contact = str(req.contacts[0].uri)
    assert "alias=203.0.113.5~40000~1" in contact
    # an in-dialog request coming back carries the Contact as its R-URI
    back = _invite("198.51.100.1:5060", "sip:x@198.51.100.1", ruri=contact)
    assert pop_ruri_alias(back) == ("UDP", "203.0.113.5", 40000)
    assert "alias" not in back.uri
    assert pop_ruri_alias(back) is None


def test_alias_not_added_when_contact_is_the_source() -> None:
    req = _invite("203.0.113.5:5060", "sip:a@203.0.113.5:5060")
    assert not add_contact_alias(req, "203.0.113.5", 5060, "udp")


def test_keepalive_table_schedules_and_expires() -> None:
    table = KeepAliveTable(interval=10)
    table.register("sip:a@192.168.1.10", "udp", "203.0.113.5", 40000, None, 25, now=0)
    assert table.due(5) == []
    assert [t.host for t in table.due(10)] == ["203.0.113.5"]
    assert table.due(15) == []
    assert len(table.due(20)) == 1
    assert table.due(30) == []  # expired at 25
    assert table.targets == {}
    table.register("sip:a@x", "tcp", "203.0.113.6", 1, "conn-1", 100, now=0)
    assert table.forget_flow("conn-1") == 1


def test_keepalive_options_is_valid_sip() -> None:
    msg = parse_message(keepalive_options("sip:a@192.168.1.10", "198.51.100.7", 5060, "udp"))
    assert isinstance(msg, Request)
    assert msg.method == "OPTIONS"
    assert len(msg.vias) == 1
