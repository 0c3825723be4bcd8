"""REQINIT checks (kamailio.cfg route[REQINIT] + sanity_check) on parsed requests."""

from __future__ import annotations

import pytest

from sipmesh.edge.reqinit import Answer, Drop, ReqInit, looks_like_sip
from sipmesh.sip import ParseError, Request, parse_message


def _req(first: str, extra: str = "", mf: str = "70") -> Request:
    method = first.split(" ")[0]
    text = (
        f"{first} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\n"
        f"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n"
        f"Max-Forwards: {mf}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def _checks(**kw: object) -> ReqInit:
    return ReqInit(
        is_myself=lambda host, port: host in ("sipmesh.test", "127.0.0.1"),
        scanners=["friendly-scanner", "sipvicious"],
        **kw,  # type: ignore[arg-type]
    )


def test_scanner_dropped() -> None:
    req = _req("INVITE sip:b@x", "User-Agent: Friendly-Scanner 1.0\r\n")
    assert _checks().check(req) == Drop("scanner")


def test_max_forwards_zero_is_483() -> None:
    verdict = _checks().check(_req("INVITE sip:b@x", mf="0"))
    assert isinstance(verdict, Answer)
    assert verdict.status == 483


def test_options_to_server_with_max_forwards_zero_answered_200() -> None:
    verdict = _checks().check(_req("OPTIONS sip:sipmesh.test", mf="0"))
    assert isinstance(verdict, Answer)
    assert verdict.status == 200
    assert dict(verdict.headers)["Accept"] == "application/sdp"


def test_options_to_a_user_is_routed() -> None:
    assert _checks().check(_req("OPTIONS sip:bob@sipmesh.test")) is None


def test_unsupported_uri_scheme_416() -> None:
    verdict = _checks().check(_req("INVITE http://example.com/x"))
    assert isinstance(verdict, Answer)
    assert verdict.status == 416


def test_proxy_require_unknown_420_with_unsupported() -> None:
    verdict = _checks().check(_req("INVITE sip:b@x", "Proxy-Require: foo, path\r\n"))
    assert isinstance(verdict, Answer)
    assert verdict.status == 420
    assert dict(verdict.headers)["Unsupported"] == "foo, path"
    allowed = _checks(proxy_require_supported=["foo", "path"])
    assert allowed.check(_req("INVITE sip:b@x", "Proxy-Require: foo, path\r\n")) is None


def test_ack_is_never_answered() -> None:
    assert isinstance(_checks().check(_req("ACK sip:b@x", mf="0")), Drop)


def test_parse_failure_answered_when_partial_present() -> None:
    data = (
        b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKy\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    with pytest.raises(ParseError) as info:
        parse_message(data)
    verdict = ReqInit.parse_failure(info.value)
    assert isinstance(verdict, Answer)
    assert verdict.status == 400


def test_parse_failure_without_answerable_part_dropped() -> None:
    with pytest.raises(ParseError) as info:
        parse_message(b"INVITE sip:b@x SIP/2.0\r\nFoo\r\n\r\n")
    assert ReqInit.parse_failure(info.value) == Drop("malformed")


@pytest.mark.parametrize(
    ("data", "sip"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\n", True),
        (b"SIP/2.0 200 OK\r\n", True),
        (b"\r\nOPTIONS sip:a SIP/2.0\r\n", True),
        # Malformed but SIP: answered 400 later (RFC 4475 lwsstart, trws).
        (b"INVITE  sip:a@b  SIP/2.0\r\n", True),
        (b"OPTIONS sip:a@b SIP/2.0  \r\n", True),
        (b"GET / HTTP/1.1\r\n", False),
        (b"\x00\x01\x02\x03", False),
        (b"", False),
    ],
)
def test_looks_like_sip(data: bytes, sip: bool) -> None:
    assert looks_like_sip(data) is sip
