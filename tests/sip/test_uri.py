"""URIs: sip/sips/tel/other, escaping, §19.1.4 comparison, name-addr."""

from __future__ import annotations

import pytest

from sipmesh.sip import AbsoluteURI, NameAddr, ParseError, SipURI, TelURI, parse_uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


def test_full_sip_uri_components() -> None:
    uri = sip(
        "sips:alice:secret@Atlanta.Example.com:5061;transport=TCP;lr;maddr=192.0.2.1?subject=x&priority=urgent"
    )
    assert uri.scheme == "sips"
    assert uri.secure
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "Atlanta.Example.com"
    assert uri.port == 5061
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "192.0.2.1"}
    assert uri.transport == "tcp"
    assert uri.lr
    assert uri.maddr == "192.0.2.1"
    assert uri.headers == {"subject": "x", "priority": "urgent"}
    assert uri.hostport == "Atlanta.Example.com:5061"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.example.com",
        "sip:alice:secret@atlanta.example.com;transport=tcp",
        "sips:alice@atlanta.example.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
        "sip:alice@192.0.2.4",
        "sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com",
        "sip:alice;day=tuesday@atlanta.example.com",
        "sip:[2001:db8::10]:5070;lr",
        "sip:%00%20x@h.example.com",
    ],
)
def test_rfc3261_examples_round_trip(text: str) -> None:
    uri = sip(text)
    assert str(uri) == text
    assert sip(str(uri)) == uri


def test_escaped_user_is_stored_unescaped_and_re_escaped() -> None:
    uri = sip("sip:%61lice%20x@example.com")
    assert uri.user == "alice x"
    assert str(uri) == "sip:alice%20x@example.com"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 §19.1.4 equivalent pairs.
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_equivalent_uris(a: str, b: str) -> None:
    assert sip(a) == sip(b)
    assert hash(sip(a)) == hash(sip(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 §19.1.4 non-equivalent pairs.
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@example.com", "sips:alice@example.com"),
    ],
)
def test_non_equivalent_uris(a: str, b: str) -> None:
    assert sip(a) != sip(b)


def test_uris_work_as_dict_keys() -> None:
    table = {sip("sip:Alice@Example.COM;transport=udp"): 1}
    assert table[sip("sip:Alice@example.com;TRANSPORT=UDP")] == 1
    assert sip("sip:alice@example.com;transport=udp") not in table  # user is case-sensitive


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:port",
        "sip:alice@[2001:db8::1",
        "sip:alice@[not-an-ip]",
        "sip:al<ice@example.com",
        "sip:alice@example.com;=x",
        "sip:alice%zz@example.com",
        "tel:xyz",
        "no-colon",
        "1sip:x",
        "mailto:a b",
    ],
)
def test_malformed_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_uri(text)
    assert info.value.status_hint == 400


def test_tel_uri_rfc3966() -> None:
    uri = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert isinstance(uri, TelURI)
    assert uri.is_global
    assert uri.digits == "+12015550123"
    assert uri.params == {"ext": "1234"}
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelURI)
    assert not local.is_global
    assert local.phone_context == "example.com"
    # Visual separators and parameter order do not matter (RFC 3966 §4).
    assert parse_uri("tel:+1(201)555-0123;b=2;a=1") == parse_uri("tel:+12015550123;a=1;b=2")
    assert str(uri) == "tel:+1-201-555-0123;ext=1234"


def test_unknown_scheme_is_absolute_uri() -> None:
    uri = parse_uri("urn:service:sos")
    assert isinstance(uri, AbsoluteURI)
    assert uri.scheme == "urn"
    assert str(uri) == "urn:service:sos"
    assert uri == parse_uri("URN:service:sos")


def test_copy_is_independent() -> None:
    uri = sip("sip:alice@example.com;lr")
    other = uri.copy()
    other.params["transport"] = "tcp"
    assert "transport" not in uri.params


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Alice \\"A\\" Liddell" <sip:alice@example.com>;tag=abc')
    assert quoted.display_name == 'Alice "A" Liddell'
    assert quoted.tag == "abc"
    token = NameAddr.parse("Bob  Smith <sip:bob@example.com>")
    assert token.display_name == "Bob Smith"
    bare = NameAddr.parse("sip:carol@example.com;tag=1")
    assert bare.display_name is None
    assert bare.params == {"tag": "1"}
    assert str(bare) == "<sip:carol@example.com>;tag=1"
    assert str(token) == "Bob Smith <sip:bob@example.com>"
    assert str(quoted) == '"Alice \\"A\\" Liddell" <sip:alice@example.com>;tag=abc'
    reparsed = NameAddr.parse(str(quoted))
    assert reparsed.display_name == quoted.display_name


def test_name_addr_tag_setter() -> None:
    addr = NameAddr.parse("<sip:a@example.com>")
    addr.tag = "xyz"
    assert str(addr) == "<sip:a@example.com>;tag=xyz"
    addr.tag = None
    assert addr.params == {}


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@example.com>',
        "Bell, Alexander <sip:a@example.com>",
        "<sip:a@example.com",
        "< sip:a@example.com >",
        "sip:a@example.com?x=y",
        "<sip:a@example.com>;=bad",
    ],
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(ParseError):
        NameAddr.parse(text)
