"""Helpers for tests that drive the router (this suite's and end-to-end ones).

``sip_request`` and ``route_request`` build what the edge would send;
``answer_challenge`` is a UA's digest answer to a 401/407.
"""

from __future__ import annotations

import secrets

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.digest import build_credentials
from sipmesh.sip.fields import format_auth_params

DOMAIN = "example.com"


def sip_request(
    method: str,
    ruri: str,
    *,
    from_uri: str = f"sip:alice@{DOMAIN}",
    to_uri: str | None = None,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    call_id: str | None = None,
    cseq: int = 1,
) -> Request:
    to_value = f"<{to_uri or ruri}>" + (f";tag={to_tag}" if to_tag else "")
    hdrs = [
        ("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{secrets.token_hex(6)}"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={secrets.token_hex(4)}"),
        ("To", to_value),
        ("Call-ID", call_id or secrets.token_hex(8)),
        ("CSeq", f"{cseq} {method}"),
        *(headers or []),
        ("Content-Length", str(len(body))),
    ]
    return Request(method, ruri, hdrs, body)


def route_request(
    msg: Request,
    *,
    kind: router_pb2.RouteKind.ValueType = router_pb2.ROUTE_KIND_REQUEST,
    context: bytes = b"",
    handler: str = "",
    reply_status: int = 0,
    reply: Response | None = None,
    src: tuple[str, int] = ("192.0.2.10", 5060),
    nat: bool = False,
) -> router_pb2.RouteRequest:
    source = common_pb2.Source(
        remote=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host=src[0], port=src[1]),
        local=common_pb2.Address(
            transport=common_pb2.TRANSPORT_UDP, host="198.51.100.1", port=5060
        ),
        nat_detected=nat,
    )
    return router_pb2.RouteRequest(
        kind=kind,
        message=common_pb2.SipMessage(raw=bytes(msg), source=source),
        context=context,
        handler=handler,
        reply_status=reply_status,
        reply=bytes(reply) if reply is not None else b"",
    )


def answer_challenge(msg: Request, challenge_raw: bytes, user: str, password: str) -> Request:
    """``msg`` again with credentials for the challenge in ``challenge_raw``."""
    from sipmesh.sip.digest import DigestChallenge

    resp = parse_message(challenge_raw)
    assert isinstance(resp, Response)
    name = "Proxy-Authenticate" if resp.status == 407 else "WWW-Authenticate"
    header = resp.get(name)
    assert header is not None
    ch = DigestChallenge.parse(header)
    creds = build_credentials(ch, username=user, password=password, method=msg.method, uri=msg.uri)
    auth_name = "Proxy-Authorization" if resp.status == 407 else "Authorization"
    out = Request(msg.method, msg.uri, msg.headers, msg.body)
    out.add(auth_name, format_auth_params("Digest", creds.to_params()))
    return out
