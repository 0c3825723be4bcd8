"""Datagram parsing rules: start lines, folding, body framing, answerable errors."""

from __future__ import annotations

import pytest

from sipmesh.sip import ParseError, Request, Response, parse_message

BASE_HEADERS = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@example.com>;tag=9fxced76sl\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: 3848276298220188511@example.com\r\n"
    "CSeq: 1 OPTIONS\r\n"
)


def options(
    extra: str = "", body: bytes = b"", start: str = "OPTIONS sip:bob@example.com SIP/2.0"
) -> bytes:
    return (start + "\r\n" + BASE_HEADERS + extra + "\r\n").encode() + body


def test_minimal_request() -> None:
    msg = parse_message(options())
    assert isinstance(msg, Request)
    assert msg.method == "OPTIONS"
    assert msg.uri == "sip:bob@example.com"
    assert msg.version == "SIP/2.0"
    assert msg.body == b""
    assert len(msg.headers) == 6


def test_leading_crlfs_are_ignored_and_serialisation_drops_them() -> None:
    data = options()
    msg = parse_message(b"\r\n\r\n" + data)
    assert msg.call_id == "3848276298220188511@example.com"
    assert bytes(msg) == data


def test_bare_lf_line_ends_are_tolerated() -> None:
    msg = parse_message(options().replace(b"\r\n", b"\n"))
    assert isinstance(msg, Request)
    assert msg.cseq.seq == 1


def test_folded_header_is_unfolded() -> None:
    msg = parse_message(options("Subject: first\r\n  second\r\n\tthird\r\n"))
    assert msg.get("Subject") == "first second third"


def test_body_without_content_length_is_rest_of_datagram() -> None:
    msg = parse_message(options(body=b"hello"))
    assert msg.body == b"hello"
    assert msg.content_length is None


def test_content_length_limits_body_and_extra_bytes_are_dropped() -> None:
    msg = parse_message(options("Content-Length: 3\r\n", body=b"abcdef"))
    assert msg.body == b"abc"
    assert bytes(msg).endswith(b"\r\n\r\nabc")


def test_content_length_too_large_is_400_with_partial() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(options("Content-Length: 10\r\n", body=b"abc"))
    assert info.value.status_hint == 400
    partial = info.value.partial
    assert partial is not None
    assert partial.top_via is not None
    assert partial.top_via.branch == "z9hG4bK74bf9"
    assert partial.from_.tag == "9fxced76sl"
    assert partial.cseq.method == "OPTIONS"
    assert "Max-Forwards" not in partial


def test_response_parse() -> None:
    data = b"SIP/2.0 486 Busy Here\r\n" + BASE_HEADERS.encode() + b"Content-Length: 0\r\n\r\n"
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (486, "Busy Here")
    assert bytes(msg) == data


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"garbage", 400),
        (options(start="OPTIONS sip:bob@example.com SIP/3.0"), 505),
        (options(start="OPTIONS sip:bob@example.com HTTP/1.1"), 400),
        (options(start="OPT<IONS sip:bob@example.com SIP/2.0"), 400),
        (options(start="OPTIONS sip:bob@example.com"), 400),
        (options().replace(b"Max-Forwards: 70", b"Max-Forwards: ten"), 400),
        (options("Content-Length: x\r\n"), 400),
        (options("Bad Header: x\r\n"), 400),
        (options("NoColonHere\r\n"), 400),
        (options(start="INVITE sip:bob@example.com SIP/2.0"), 400),
        (options(start="FOO sip:bob@example.com SIP/2.0"), 501),
        (b"SIP/2.0 99 Too Small\r\n" + BASE_HEADERS.encode() + b"\r\n", 400),
        (b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n\r\n", 400),
        (options().replace(b"Call-ID", b"X-Call-ID"), 400),
    ],
)
def test_invalid_datagrams(data: bytes, status: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.status_hint == status


def test_max_size_gives_413() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(options(body=b"x" * 100), max_size=100)
    assert info.value.status_hint == 413


def test_unknown_request_uri_scheme_parses() -> None:
    msg = parse_message(options(start="OPTIONS im:bob@example.com SIP/2.0"))
    assert isinstance(msg, Request)
    assert msg.ruri.scheme == "im"


def test_error_in_response_has_no_partial() -> None:
    data = b"SIP/2.0 200 OK\r\n" + BASE_HEADERS.encode() + b"Content-Length: 99\r\n\r\n"
    with pytest.raises(ParseError) as info:
        parse_message(data)
    assert info.value.partial is None


def test_non_utf8_bytes_survive_round_trip() -> None:
    raw = options().replace(b"CSeq:", b"X-Raw: \xff\xfe\r\nCSeq:")
    msg = parse_message(raw)
    assert msg.get("X-Raw") is not None
    assert bytes(msg) == raw
    msg.set("Max-Forwards", "69")
    assert b"X-Raw: \xff\xfe\r\n" in bytes(msg)
