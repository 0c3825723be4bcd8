"""RFC 5626 flow tokens: which edge instance owns a flow, carried in Record-Route and
Path so that a request arriving at ANY edge reaches the flow (DESIGN.md principle 4).

A token names ``(edge_id, flow_id)`` — a TCP/TLS/WS connection or a (NATed) UDP
binding of one edge instance — and is protected by an HMAC (RFC 5626 §5.2: the
token must not be forgeable, else anyone could send requests down another user's
flow, since in-dialog requests are not authenticated). Every edge of an
installation shares the key (kept in the shared key/value store, see
``load_key``), so any edge can check a token another one made.

Where the tokens go (docs/edge.md, Flow tokens):

- **Record-Route** of a dialog-forming request: ``ftag=<From tag>`` plus
  ``flow-callee=<token>`` when the branch goes over a flow (the callee's, ours or
  another edge's) and ``flow-caller=<token>`` when the request arrived over a
  connection or a NATed UDP binding of this edge. A later in-dialog request whose
  From tag is ``ftag`` goes towards the callee, any other towards the caller
  (Kamailio rr's ``is_direction``); the router's ``loose_route`` takes the token of
  that direction from the popped Route and puts it on the target
  (``Target.flow_token``); the edge turns it back into ``edge_id``/``flow_id`` and
  sends over the flow, or hands the request to the owning edge.
- **Path** of a REGISTER from a UA that supports path or outbound
  (``<sip:TOKEN@edge;lr>``, with ``;ob`` for outbound, RFC 5626 §5.1): the
  registrar stores it and requests to the user carry it as their first Route.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import ParseError, Request, SipURI
from sipmesh.state.kv import KVStore

from .branches import ProxyTransaction
from .forward import Hop

__all__ = [
    "CALLEE_PARAM",
    "CALLER_PARAM",
    "FTAG_PARAM",
    "KEY_NAME",
    "FlowTokens",
    "flow_target",
    "load_key",
    "path_value",
    "route_flow",
    "rr_flow_params",
    "rr_flows",
    "with_route_flow",
]

log = logging.getLogger("sipmesh.edge")

KEY_NAME = "edge:flow-token-key"
FTAG_PARAM = "ftag"
CALLER_PARAM = "flow-caller"
CALLEE_PARAM = "flow-callee"
_MAC_BYTES = 12
# What a From tag may hold to go into a URI parameter unescaped (RFC 3261 §25.1
# paramchar ∩ token); other tags get no flow parameters (routing falls back to
# the Route/R-URI as before).
_SAFE_TAG = re.compile(r"[A-Za-z0-9\-_.!~*'+]{1,128}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FlowTokens:
    """Makes and checks tokens ``<base64url(edge_id NUL flow_id)>.<base64url(mac)>``
    (URI-safe: base64url and '.' are unreserved characters, RFC 3261 §25.1)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("flow token key too short")
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, edge_id: str, flow_id: str) -> str:
        payload = edge_id.encode() + b"\x00" + flow_id.encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str) -> tuple[str, str] | None:
        """(edge_id, flow_id), or None for a token that is malformed or not ours."""
        body, sep, mac = token.partition(".")
        if not sep or not body or not mac:
            return None
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(self._mac(payload), given):
            return None
        edge_id, sep2, flow_id = payload.partition(b"\x00")
        if not sep2 or not edge_id or not flow_id:
            return None
        try:
            return edge_id.decode(), flow_id.decode()
        except UnicodeDecodeError:
            return None

    def resolve(self, target: router_pb2.Target | None) -> router_pb2.Target | None:
        """``target`` with its flow token turned into ``edge_id``/``flow_id`` (the
        handover path of forward.next_hop); an invalid token is dropped (the request
        is then routed by its Route/R-URI, never down a flow it does not name)."""
        if target is None or not target.flow_token or target.flow_id:
            return target
        out = router_pb2.Target()
        out.CopyFrom(target)
        out.ClearField("flow_token")
        owner = self.decode(target.flow_token)
        if owner is not None:
            out.edge_id, out.flow_id = owner
        else:
            log.debug("flow token rejected: %s", target.flow_token[:40])
        return out


def rr_flow_params(
    tokens: FlowTokens,
    from_tag: str | None,
    caller: tuple[str, str] | None,
    callee: tuple[str, str] | None,
) -> str:
    """The Record-Route parameters for the flows of a dialog ("" when none apply)."""
    if (caller is None and callee is None) or not from_tag or not _SAFE_TAG.fullmatch(from_tag):
        return ""
    out = f";{FTAG_PARAM}={from_tag}"
    if caller is not None:
        out += f";{CALLER_PARAM}={tokens.encode(*caller)}"
    if callee is not None:
        out += f";{CALLEE_PARAM}={tokens.encode(*callee)}"
    return out


def route_flow(popped: list[SipURI], request: Request) -> str:
    """The flow token of the request's direction in our own Route values that were
    just removed (§16.4): ``flow-callee`` when the From tag is the dialog's ``ftag``
    (the caller's request), else ``flow-caller`` (Kamailio rr's is_direction)."""
    for uri in popped:
        ftag = uri.params.get(FTAG_PARAM)
        if not ftag:
            continue
        try:
            to_callee = ftag == request.from_.tag
        except ParseError:
            return ""
        token = uri.params.get(CALLEE_PARAM if to_callee else CALLER_PARAM)
        return token or ""
    return ""


def with_route_flow(
    target: router_pb2.Target | None, popped: list[SipURI], request: Request
) -> router_pb2.Target | None:
    """``target`` with the flow token of our popped Record-Route when it names no
    flow itself: the edge finds the token even when the router did not pop the
    Route (in split mode its ``myself`` may not know this edge's port)."""
    if not popped or (target is not None and (target.flow_id or target.flow_token)):
        return target
    token = route_flow(popped, request)
    if not token:
        return target
    out = router_pb2.Target()
    if target is not None:
        out.CopyFrom(target)
    out.flow_token = token
    return out


def flow_target(
    tokens: FlowTokens, target: router_pb2.Target | None, own_edge_id: str, source_flow: str | None
) -> router_pb2.Target | None:
    """A target naming its flow by token (an in-dialog request after the router's
    loose_route) with edge_id/flow_id instead; never back down the flow the request
    came in on (it would return to its sender)."""
    if target is None or not target.flow_token or target.flow_id:
        return target
    resolved = tokens.resolve(target)
    assert resolved is not None
    own = resolved.edge_id in ("", own_edge_id)
    if own and resolved.flow_id and resolved.flow_id == source_flow:
        resolved.ClearField("flow_id")
        resolved.ClearField("edge_id")
    return resolved


def rr_flows(tokens: FlowTokens, ptx: ProxyTransaction, hop: Hop, own_edge_id: str) -> str:
    """The Record-Route flow parameters of a branch: the caller's flow when the
    request came over a connection or a NATed UDP binding of this edge, the callee's
    when the branch goes over a flow (this edge's or, handed over, another's)."""
    src = ptx.source
    caller = None
    if src.flow and (src.transport.upper() != "UDP" or ptx.source_pb.nat_detected):
        caller = (own_edge_id, src.flow)
    callee = (hop.edge_id or own_edge_id, hop.flow_id) if hop.flow_id else None
    try:
        from_tag = ptx.request.from_.tag
    except ParseError:
        return ""
    return rr_flow_params(tokens, from_tag, caller, callee)


def path_value(token: str, transport: str, host: str, port: int, *, outbound: bool) -> str:
    """The edge's Path header value for a REGISTER (RFC 3327 §4.2, RFC 5626 §5.1):
    the flow token as user part; ``ob`` when the UA asked for outbound."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    extra = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:{token}@{name}:{port}{extra};lr{';ob' if outbound else ''}>"


async def load_key(kv: KVStore) -> bytes:
    """The installation's token key: created once in the shared store by the first
    edge (set-if-absent), read by every other. When the store cannot be reached a
    key of this process is used (tokens then hold on this edge only) and a warning
    says so."""
    candidate = secrets.token_bytes(32)
    try:
        await kv.set_if_absent(KEY_NAME, candidate)
        stored = await kv.get(KEY_NAME)
    except Exception as exc:
        log.warning("flow token key not shared (store unavailable: %s)", exc)
        return candidate
    return stored if stored is not None and len(stored) >= 16 else candidate
