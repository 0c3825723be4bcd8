"""Header names, compact forms, list splitting and typed header values."""

from __future__ import annotations

import pytest

from sipmesh.sip import (
    Contact,
    CSeq,
    ParseError,
    Via,
    format_auth_params,
    header_key,
    parse_auth_params,
    split_list,
)
from sipmesh.sip.fields import CHALLENGE_UNQUOTED
from sipmesh.sip.headers import is_list_header, pretty_name


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Via", "via"),
        ("v", "via"),
        ("V", "via"),
        ("i", "call-id"),
        ("Call-ID", "call-id"),
        ("CALL-id", "call-id"),
        ("m", "contact"),
        ("l", "content-length"),
        ("k", "supported"),
        ("o", "event"),
        ("u", "allow-events"),
        ("x", "session-expires"),
        ("X-Custom ", "x-custom"),
    ],
)
def test_header_keys(name: str, key: str) -> None:
    assert header_key(name) == key


def test_pretty_names() -> None:
    assert pretty_name("call-id") == "Call-ID"
    assert pretty_name("cseq") == "CSeq"
    assert pretty_name("record-route") == "Record-Route"


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b,c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y>', ['"Doe, John" <sip:j@x>', "<sip:k@y>"]),
        ("<sip:a@x;p=1,2>;q=0.5, <sip:b@y>", ["<sip:a@x;p=1,2>;q=0.5", "<sip:b@y>"]),
        ('"a \\", b", c', ['"a \\", b"', "c"]),
        (" , a,, ", ["a"]),
        ("", []),
    ],
)
def test_split_list(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


def test_list_headers() -> None:
    assert is_list_header("via")
    assert is_list_header("contact")
    assert not is_list_header("www-authenticate")
    assert not is_list_header("date")
    assert not is_list_header("x-unknown")


def test_via_parse_and_serialise() -> None:
    params = ";branch=z9hG4bK1;received=192.0.2.1;rport=5060;maddr=224.0.0.1;ttl=16"
    via = Via.parse("SIP/2.0/udp host.example.com:5062" + params)
    assert via.protocol == "SIP/2.0"
    assert via.transport == "UDP"
    assert (via.host, via.port) == ("host.example.com", 5062)
    assert via.branch == "z9hG4bK1"
    assert via.received == "192.0.2.1"
    assert via.rport == "5060"
    assert via.maddr == "224.0.0.1"
    assert via.ttl == "16"
    assert via.sent_by == "host.example.com:5062"
    assert str(via) == "SIP/2.0/UDP host.example.com:5062" + params
    bare = Via.parse("SIP/2.0/TCP [2001:db8::1];rport")
    assert bare.rport == ""
    assert bare.port is None
    assert Via.parse("SIP/2.0/UDP h").rport is None
    via.params["received"] = "198.51.100.7"
    assert "received=198.51.100.7" in str(via)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP [zz]",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(ParseError):
        Via.parse(text)


def test_cseq() -> None:
    cseq = CSeq.parse("  0042   INVITE ")
    assert (cseq.seq, cseq.method) == (42, "INVITE")
    assert str(cseq) == "42 INVITE"
    assert cseq == CSeq(42, "INVITE")
    for bad in ("INVITE", "1", "x INVITE", "1 2 3", "2147483648 INVITE", "-1 INVITE"):
        with pytest.raises(ParseError):
            CSeq.parse(bad)


def test_contact_values() -> None:
    contact = Contact.parse(
        '"Phone" <sip:alice@192.0.2.1:5060;ob>;expires=3600;q=0.7;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=2'
    )
    assert not contact.is_star
    assert contact.display_name == "Phone"
    assert contact.expires == 3600
    assert contact.q == 0.7
    assert contact.instance == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert contact.reg_id == 2
    assert contact.uri.params == {"ob": None}  # type: ignore[union-attr]
    star = Contact.parse(" * ")
    assert star.is_star
    assert str(star) == "*"
    odd = Contact.parse("<sip:a@b>;expires=soon;q=2;reg-id=x")
    assert (odd.expires, odd.q, odd.reg_id, odd.instance) == (None, None, None, None)


def test_auth_params_round_trip() -> None:
    value = (
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41", '
        "algorithm=MD5"
    )
    scheme, params = parse_auth_params(value)
    assert scheme == "Digest"
    assert params["username"] == "bob"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["algorithm"] == "MD5"
    assert format_auth_params(scheme, params) == value
    assert parse_auth_params('Digest realm="a\\"b, c", nonce="n"')[1] == {
        "realm": 'a"b, c',
        "nonce": "n",
    }


def test_challenge_quotes_qop() -> None:
    text = format_auth_params(
        "Digest",
        {
            "realm": "example.com",
            "qop": "auth,auth-int",
            "nonce": "abc",
            "algorithm": "SHA-256",
            "stale": "TRUE",
        },
        unquoted=CHALLENGE_UNQUOTED,
    )
    assert text == (
        'Digest realm="example.com", qop="auth,auth-int", nonce="abc", '
        "algorithm=SHA-256, stale=TRUE"
    )
    assert parse_auth_params(text)[1]["qop"] == "auth,auth-int"


@pytest.mark.parametrize(
    "text", ["", "Digest realm", 'Digest realm="x', "Dig<est a=b", "Digest =x"]
)
def test_bad_auth_params(text: str) -> None:
    with pytest.raises(ParseError):
        parse_auth_params(text)
