"""RFC 5118 §4: the IPv6 torture test messages, with the RFC's verdict.

Stored byte-exact under tests/sip/torture/rfc5118/. Three messages print a
Content-Length that does not match their printed body (see torture/README.md);
those tests state what the RFC 3261 §18.3 datagram rules then require and also
check a copy with the length corrected, so that the IPv6 content is still tested.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipmesh.sip import ParseError, Request, SipURI, parse_message, parse_uri

DATA = Path(__file__).parent / "torture" / "rfc5118"
ALL = sorted(p.stem for p in DATA.glob("*.dat"))


def raw(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def corrected(name: str) -> bytes:
    """The message with Content-Length set to the length of its printed body."""
    data = raw(name)
    head, _, body = data.partition(b"\r\n\r\n")
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head)
    return head + b"\r\n\r\n" + body


def sip(uri: object) -> SipURI:
    assert isinstance(uri, SipURI)
    return uri


def test_every_message_of_section_4_is_present() -> None:
    # 4.1-4.9 one message each (4.5 has two), 4.10 two messages.
    assert len(ALL) == 12


def test_4_1_ipv6_good_reference_in_ruri_via_contact() -> None:
    msg = request(raw("ipv6-good"))
    assert sip(msg.ruri).host == "[2001:db8::10]"
    assert sip(msg.ruri).port is None
    assert msg.top_via is not None
    assert msg.top_via.host == "[2001:db8::9:1]"
    assert msg.top_via.port is None
    (contact,) = msg.contacts
    assert contact.display_name == "Caller"
    assert sip(contact.uri).host == "[2001:db8::1]"
    assert bytes(msg) == raw("ipv6-good")


def test_4_2_ipv6_bad_reference_without_brackets_400() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(raw("ipv6-bad"))
    assert info.value.status_hint == 400
    assert info.value.partial is not None


def test_4_3_port_ambiguous_is_an_ipv6_address_not_a_port() -> None:
    # "[2001:db8::10:5070]" is a valid IPv6 reference with no port.
    msg = request(raw("port-ambiguous"))
    assert sip(msg.ruri).host == "[2001:db8::10:5070]"
    assert sip(msg.ruri).port is None


def test_4_4_port_unambiguous() -> None:
    msg = request(raw("port-unambiguous"))
    assert sip(msg.ruri).host == "[2001:db8::10]"
    assert sip(msg.ruri).port == 5070


def test_4_5_via_received_with_ipv6_delimiters() -> None:
    msg = request(raw("via-received-param-with-delim"))
    assert msg.top_via is not None
    assert msg.top_via.received == "[2001:db8::9:255]"
    assert msg.top_via.branch == "z9hG4bKas3-111"


def test_4_5_via_received_without_ipv6_delimiters() -> None:
    # RFC 3261's grammar has no brackets here; RFC 5118 asks to accept both forms.
    msg = request(raw("via-received-param-no-delim"))
    assert msg.top_via is not None
    assert msg.top_via.received == "2001:db8::9:255"
    assert msg.top_via.branch == "z9hG4bKas3"


def test_4_6_ipv6_in_sdp_printed_length_exceeds_body() -> None:
    # The RFC prints Content-Length: 268 over a 251-octet body: as a datagram this
    # is a Content-Length larger than the message, which RFC 3261 §18.3 answers
    # with 400. With the length corrected the message is valid, as the RFC intends.
    with pytest.raises(ParseError) as info:
        parse_message(raw("ipv6-in-sdp"))
    assert info.value.status_hint == 400
    msg = request(corrected("ipv6-in-sdp"))
    assert b"c=IN IP6 2001:db8::20\r\n" in msg.body
    assert sip(msg.ruri).host == "[2001:db8::10]"
    assert msg.top_via is not None
    assert msg.top_via.host == "[2001:db8::20]"


def test_4_7_multiple_ip_addresses_in_headers() -> None:
    msg = request(raw("mult-ip-in-header"))
    vias = msg.vias
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "[2001:db8::9:1]", 6050),
        ("UDP", "192.0.2.1", None),
        ("TCP", "[2001:db8::9:255]", None),
    ]
    assert vias[2].received == "192.0.2.200"


def test_4_8_multiple_ip_addresses_in_sdp() -> None:
    # The printed Content-Length (181) is shorter than the printed body (189):
    # the datagram rule keeps 181 octets and ignores the rest.
    msg = request(raw("mult-ip-in-sdp"))
    assert len(msg.body) == 181
    assert b"c=IN IP6 2001:db8::1\r\n" in msg.body
    full = request(corrected("mult-ip-in-sdp"))
    assert full.body.endswith(b"a=rtpmap:107 H263-1998/90000\r\n")


def test_4_9_ipv4_mapped_ipv6_addresses() -> None:
    msg = request(raw("ipv4-mapped-ipv6"))
    assert [(v.host, v.port) for v in msg.vias] == [
        ("[::ffff:192.0.2.10]", 19823),
        ("[::ffff:192.0.2.2]", None),
    ]
    assert sip(msg.contacts[0].uri).host == "[::ffff:192.0.2.2]"
    assert msg.contacts[0].display_name == "T. desk phone"
    assert len(msg.body) == 236  # printed Content-Length; the body is 245 octets
    assert request(corrected("ipv4-mapped-ipv6")).body.endswith(b"H263-1998/90000\r\n")


def test_4_10_ipv6_abnf_bug_three_colons_rejected_400() -> None:
    # "2001:db8:::192.0.2.1" is not an IPv6 address (RFC 3261's ABNF bug allowed it).
    with pytest.raises(ParseError) as info:
        parse_message(raw("ipv6-bug-abnf-3-colons"))
    assert info.value.status_hint == 400


def test_4_10_ipv6_correct_abnf_two_colons() -> None:
    msg = request(raw("ipv6-correct-abnf-2-colons"))
    assert sip(msg.ruri).host == "[2001:db8::192.0.2.1]"
    assert sip(msg.to.uri).host == "[2001:db8::192.0.2.1]"


def test_ipv6_hosts_compare_as_addresses() -> None:
    # RFC 5118 §4.10 / RFC 3261 §19.1.4: textual variants of one address are equal.
    assert parse_uri("sip:user@[2001:db8::192.0.2.1]") == parse_uri(
        "sip:user@[2001:DB8:0:0:0:0:c000:201]"
    )
    assert hash(parse_uri("sip:[::1]")) == hash(parse_uri("sip:[0:0:0:0:0:0:0:1]"))
