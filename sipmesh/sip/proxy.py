"""Stateful proxy helpers (RFC 3261 §16): branches, Via, Max-Forwards, routing, RR.

Each helper edits or inspects one message; the proxy core in services/edge strings
them together. Response handling (§16.7) is in :mod:`sipmesh.sip.proxy_response`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sipmesh.sip.fields import Via
from sipmesh.sip.message import Message, Request
from sipmesh.sip.stateless import make_ack, make_cancel
from sipmesh.sip.transaction.common import MAGIC_COOKIE, server_key
from sipmesh.sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_uri

__all__ = [
    "MAGIC_COOKIE",
    "Interface",
    "RouteResult",
    "add_record_route",
    "add_via",
    "decrement_max_forwards",
    "make_ack",
    "make_branch",
    "make_cancel",
    "max_forwards_exhausted",
    "next_hop",
    "preprocess_routes",
    "remove_top_via",
    "strict_route_fixup",
]

AnyURI = SipURI | TelURI | AbsoluteURI


def make_branch(request: Request, index: int, *, salt: str = "") -> str:
    """Branch for our ``index``-th fork of ``request`` (RFC 3261 §16.6 step 8).

    Derived from the incoming request's transaction key (§17.2.3) and the fork index,
    so it starts with the magic cookie, is unique per fork, and a CANCEL (or ACK) of
    that INVITE arriving later yields the same branch: the CANCEL we send downstream
    then matches the INVITE's client transaction at the next hop (§9.1). ``salt``
    (e.g. the instance id) keeps branches of different proxies apart.
    """
    method = "INVITE" if request.method in ("CANCEL", "ACK") else None
    key = server_key(request, method=method)
    digest = hashlib.blake2s(f"{salt}\x00{key}\x00{index}".encode(), digest_size=12).hexdigest()
    return f"{MAGIC_COOKIE}{digest}.{index}"


def add_via(
    request: Request,
    transport: str,
    host: str,
    port: int | None,
    branch: str,
    *,
    rport: bool = True,
) -> Via:
    """Push our Via on top (§16.6 step 8); ``rport`` asks for RFC 3581 treatment."""
    params: dict[str, str | None] = {"branch": branch}
    if rport:
        params["rport"] = None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    via = Via(transport, host, port, params)
    request.add("Via", str(via), first=True)
    return via


def remove_top_via(message: Message) -> Via | None:
    """Pop the top Via (ours) off a response (§16.7 step 3)."""
    text = message.pop_first("Via")
    return None if text is None else Via.parse(text)


def max_forwards_exhausted(request: Request) -> bool:
    """§16.3 step 3: Max-Forwards of 0 must not be forwarded (answer 483, or answer
    OPTIONS as the final recipient). Absent passes the check."""
    value = request.max_forwards
    return value is not None and value <= 0


def decrement_max_forwards(request: Request, default: int = 70) -> int:
    """§16.6 step 3: decrement, or add ``Max-Forwards: 70`` when absent. Returns it."""
    value = request.max_forwards
    new = default if value is None else max(value - 1, 0)
    request.set("Max-Forwards", str(new))
    return new


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What :func:`preprocess_routes` did."""

    strict_router_fixed: bool = False  # R-URI restored from the last Route (§16.4)
    removed: tuple[NameAddr, ...] = field(default_factory=tuple)  # our Route values


def _route_uri(value: str) -> AnyURI:
    return NameAddr.parse(value).uri


def preprocess_routes(
    request: Request,
    is_local: Callable[[AnyURI], bool],
    *,
    is_own_record_route: Callable[[AnyURI], bool] | None = None,
) -> RouteResult:
    """Route information preprocessing (§16.4), loose routing with strict-router
    compatibility.

    1. If the Request-URI is a value we put in a Record-Route (the previous hop was a
       strict router), replace it with the last Route value and remove that value.
       ``is_own_record_route`` recognises such URIs; by default a local URI carrying
       ``lr`` (every Record-Route we insert has ``lr``, and UAs do not put ``lr`` in a
       Request-URI), which keeps requests addressed to our domain (REGISTER
       sip:example.com behind a preloaded Route) from being mistaken for one.
    2. Remove the top Route values that are us: one, or two when we record-routed
       twice because the transport changed (:func:`add_record_route`).
    """
    own_rr = is_own_record_route or (lambda u: isinstance(u, SipURI) and u.lr and is_local(u))
    strict = False
    routes = request.get_all("Route")
    ruri = request.ruri
    if routes and own_rr(ruri):
        last = NameAddr.parse(routes[-1])
        request.uri = str(last.uri)
        _rewrite_routes(request, routes[:-1])
        strict = True
    removed: list[NameAddr] = []
    while len(removed) < 2:
        routes = request.get_all("Route")
        if not routes:
            break
        top = NameAddr.parse(routes[0])
        if not is_local(top.uri):
            break
        request.pop_first("Route")
        removed.append(top)
    return RouteResult(strict, tuple(removed))


def _rewrite_routes(request: Request, values: list[str]) -> None:
    request.remove("Route")
    for value in values:
        request.add("Route", value)


def strict_route_fixup(request: Request) -> bool:
    """§16.6 step 6: if the next hop (first Route) is a strict router (no ``lr``), move
    the Request-URI to the end of the Route set and use the first Route as R-URI."""
    routes = request.get_all("Route")
    if not routes:
        return False
    first = NameAddr.parse(routes[0])
    if isinstance(first.uri, SipURI) and first.uri.lr:
        return False
    new_routes = [*routes[1:], f"<{request.uri}>"]
    request.uri = str(first.uri)
    _rewrite_routes(request, new_routes)
    return True


def next_hop(request: Request) -> AnyURI:
    """The URI to resolve for sending (§16.6 step 7): the first Route, else the R-URI."""
    routes = request.get_all("Route")
    return _route_uri(routes[0]) if routes else parse_uri(request.uri)


@dataclass(frozen=True, slots=True)
class Interface:
    """One of our listening sockets, as it appears in a Record-Route URI."""

    transport: str
    host: str
    port: int | None = None

    def rr_uri(self, *, with_transport: bool, params: Mapping[str, str | None]) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        hostport = host if self.port is None else f"{host}:{self.port}"
        out = f"sip:{hostport}"
        if with_transport:
            out += f";transport={self.transport.lower()}"
        out += ";lr"
        for name, value in params.items():
            out += f";{name}" if value is None else f";{name}={value}"
        return f"<{out}>"


def add_record_route(
    request: Request,
    inbound: Interface,
    outbound: Interface | None = None,
    *,
    params: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Insert our Record-Route (§16.6 step 4), doubled when we bridge interfaces.

    When the request leaves on another transport or address than it arrived on, two
    entries go in, as Kamailio's rr module does: the top one names the outbound side
    (what the callee's in-dialog requests reach), the second the inbound side (what
    the caller's reach), each with its ``transport`` parameter. Returns the values
    inserted, top first.
    """
    extra = dict(params or {})
    if outbound is None or outbound == inbound:
        with_transport = inbound.transport.upper() != "UDP"
        value = inbound.rr_uri(with_transport=with_transport, params=extra)
        request.add("Record-Route", value, first=True)
        return [value]
    inner = inbound.rr_uri(with_transport=True, params=extra)
    outer = outbound.rr_uri(with_transport=True, params=extra)
    request.add("Record-Route", inner, first=True)
    request.add("Record-Route", outer, first=True)
    return [outer, inner]
