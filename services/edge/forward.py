"""Building the request a proxy sends on (RFC 3261 §16.6) and finding its next hop.

Pure functions over sipmesh.sip messages and the router contract's Target; no I/O.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import NameAddr, ParseError, Request, SipURI, parse_message, parse_uri
from sipmesh.sip.transaction import MAGIC_COOKIE

__all__ = [
    "TRANSPORT_NAMES",
    "Hop",
    "add_record_route",
    "add_via",
    "apply_decision",
    "apply_edits",
    "decrement_max_forwards",
    "edited_copy",
    "format_host",
    "new_branch",
    "next_hop",
    "push_routes",
    "stateless_branch",
    "strip_own_routes",
    "transport_enum",
]

TRANSPORT_NAMES = {
    common_pb2.TRANSPORT_UDP: "udp",
    common_pb2.TRANSPORT_TCP: "tcp",
    common_pb2.TRANSPORT_TLS: "tls",
    common_pb2.TRANSPORT_WS: "ws",
    common_pb2.TRANSPORT_WSS: "wss",
    common_pb2.TRANSPORT_SCTP: "sctp",
}
_ENUMS = {v: k for k, v in TRANSPORT_NAMES.items()}

IsMyself = Callable[[str, int | None], bool]


def transport_enum(name: str) -> common_pb2.Transport.ValueType:
    return _ENUMS.get(name.lower(), common_pb2.TRANSPORT_UDP)


def format_host(host: str) -> str:
    """IPv6 literals in brackets (RFC 3261 §25.1 IPv6reference)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class Hop:
    """Where a branch goes: a transport address, or a flow (ours or another edge's)."""

    transport: str  # lower case: udp, tcp, tls, ws, wss, sctp
    host: str
    port: int
    flow_id: str | None = None
    edge_id: str | None = None


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(10)


def stateless_branch(request: Request) -> str:
    """A branch that is the same for retransmissions of the same request (§16.11).

    Derived from the incoming top Via branch (and the R-URI, which the proxy may
    change), so an ACK retransmitted by the UAC is forwarded with the same branch.
    """
    top = request.top_via
    material = f"{top.branch if top else ''}|{request.uri}|{request.cseq.seq}|{request.call_id}"
    return MAGIC_COOKIE + "sl" + hashlib.blake2s(material.encode(), digest_size=10).hexdigest()


def add_via(request: Request, transport: str, host: str, port: int, branch: str) -> None:
    """Our Via on top (§16.6 step 8); rport asks the next hop to answer symmetrically."""
    value = f"SIP/2.0/{transport.upper()} {format_host(host)}:{port};branch={branch};rport"
    request.add("Via", value, first=True)


def decrement_max_forwards(request: Request, default: int) -> None:
    """§16.6 step 3: decrement, or add one with ``default`` when absent."""
    current = request.max_forwards
    request.set("Max-Forwards", str(default if current is None else max(current - 1, 0)))


def apply_edits(request: Request, edits: Iterable[common_pb2.HeaderEdit]) -> None:
    """Kamailio's append_hf / insert_hf / remove_hf, in order."""
    op = common_pb2.HeaderEdit
    for edit in edits:
        if edit.op == op.OP_APPEND:
            request.add(edit.name, edit.value)
        elif edit.op == op.OP_INSERT:
            request.add(edit.name, edit.value, first=True)
        elif edit.op == op.OP_REMOVE:
            request.remove(edit.name)
        elif edit.op == op.OP_REPLACE:
            request.remove(edit.name)
            request.add(edit.name, edit.value)
        elif edit.op == op.OP_REMOVE_VALUE:
            kept = [v for v in request.get_all(edit.name) if v.strip() != edit.value.strip()]
            request.remove(edit.name)
            for value in kept:
                request.add(edit.name, value)


def push_routes(request: Request, path: Iterable[str]) -> None:
    """Pre-load a route set (a binding's Path, RFC 3327 §5.3) above existing Routes."""
    values = [p if p.lstrip().startswith("<") else f"<{p}>" for p in path if p]
    for value in reversed(values):
        request.add("Route", value, first=True)


def strip_own_routes(request: Request, is_myself: IsMyself) -> list[SipURI]:
    """§16.4: a Route value naming this proxy is removed before routing on; returns
    the removed URIs (their parameters are ours: flow tokens, services/edge/flowtoken.py)."""
    popped: list[SipURI] = []
    while True:
        first = request.get("Route")
        if first is None:
            return popped
        try:
            uri = NameAddr.parse(first).uri
        except ParseError:
            return popped
        if not isinstance(uri, SipURI) or not is_myself(uri.host, uri.port):
            return popped
        request.pop_first("Route")
        popped.append(uri)


def record_route_uri(transport: str, host: str, port: int, params: str) -> str:
    extra = "" if transport == "udp" else f";transport={transport}"
    tail = f";{params.lstrip(';')}" if params else ""
    return f"<sip:{format_host(host)}:{port}{extra};lr{tail}>"


def add_record_route(
    request: Request,
    inbound: tuple[str, str, int],
    outbound: tuple[str, str, int],
    params: str,
) -> None:
    """§16.6 step 4, with double Record-Route when the two sides differ (RFC 5658).

    ``inbound``/``outbound`` are (transport, host, port) of our address facing the
    caller and facing the next hop. The entry facing the next hop goes on top: the
    callee's route set starts with it, the caller's (reversed) with the other.
    """
    if inbound == outbound:
        request.add("Record-Route", record_route_uri(*outbound, params), first=True)
        return
    r2 = f"r2=on;{params.lstrip(';')}" if params else "r2=on"
    request.add("Record-Route", record_route_uri(*inbound, r2), first=True)
    request.add("Record-Route", record_route_uri(*outbound, r2), first=True)


def _uri_hop(text: str) -> Hop | None:
    try:
        uri = parse_uri(text.strip().strip("<>"))
    except ParseError:
        return None
    if not isinstance(uri, SipURI):
        return None
    transport = uri.transport or ("tls" if uri.secure else "udp")
    host = (uri.maddr or uri.host).strip("[]")
    port = uri.port or (5061 if transport in ("tls", "wss") else 5060)
    return Hop(transport, host, port)


def next_hop(request: Request, target: router_pb2.Target | None, own_edge_id: str) -> Hop | None:
    """The hop for a branch: flow > destination > $du > Route > R-URI (RFC 3261 §16.6
    steps 6-7; RFC 3263 name resolution is the router's job, names pass through)."""
    if target is not None:
        if target.flow_id:
            # The flow is tried first; the address (destination, else $du = the
            # binding's received, else Route/R-URI) is where a new connection is
            # dialled when the flow has closed (RFC 3261 §18.1.1: the connection a
            # REGISTER came over may be gone by the time a call arrives).
            edge = target.edge_id or own_edge_id
            fallback = next_hop(request, _without_flow(target), own_edge_id)
            if fallback is None:
                return None
            return Hop(
                fallback.transport,
                fallback.host,
                fallback.port,
                target.flow_id,
                None if edge == own_edge_id else edge,
            )
        if target.HasField("destination") and target.destination.host:
            dest = target.destination
            transport = TRANSPORT_NAMES.get(dest.transport, "udp")
            return Hop(transport, dest.host, dest.port or 5060)
        if target.dst_uri:
            return _uri_hop(target.dst_uri)
    route = request.get("Route")
    if route is not None:
        try:
            return _uri_hop(str(NameAddr.parse(route).uri))
        except ParseError:
            return None
    return _uri_hop(request.uri)


def _without_flow(target: router_pb2.Target) -> router_pb2.Target:
    copy = router_pb2.Target()
    copy.CopyFrom(target)
    copy.ClearField("flow_id")
    return copy


def edited_copy(base: Request, decision: router_pb2.Decision) -> Request:
    """A copy of ``base`` with the decision's header edits, R-URI and body applied."""
    copy = parse_message(bytes(base), lazy=True)  # base was validated on receipt
    assert isinstance(copy, Request)
    apply_decision(copy, decision)
    return copy


def apply_decision(request: Request, decision: router_pb2.Decision) -> None:
    """The decision's header edits, R-URI and body, in place (also a branch_route's
    decision on its branch's copy)."""
    apply_edits(request, decision.edits)
    if decision.ruri:
        request.uri = decision.ruri
    if decision.replace_body:
        request.body = decision.body
        if decision.content_type:
            request.set("Content-Type", decision.content_type)
