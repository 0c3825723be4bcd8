"""Next-hop resolution of SIP URIs (RFC 3263 §4).

``Resolver`` is the interface the routing script uses for foreign domains (SIPOUT).
The full RFC 3263 resolver (NAPTR → SRV → A/AAAA with dnspython, TTL cache, SRV
fail-over) is another helper's work and plugs in behind this Protocol. Until then
``SimpleResolver`` covers the cases that need no NAPTR/SRV: IP literals, and names
with an explicit port or transport resolved with getaddrinfo (RFC 3263 §4.2: with a
port, the A/AAAA records are used directly).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sipmesh.sip import ParseError, SipURI, parse_uri


@dataclass(frozen=True, slots=True)
class Hop:
    """One place to send to: transport (udp, tcp, tls, ws, wss, sctp), IP, port."""

    transport: str
    host: str
    port: int


class ResolveError(Exception):
    """The URI cannot be resolved; ``status`` is the SIP answer to give upstream.

    404 when the name does not exist, 408 when DNS did not answer in time, 503 for
    other failures (RFC 3263 §4.3 leaves the choice to the element; these are what
    an operator of Kamailio sees from t_relay's DNS errors mapped to final codes).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class Resolver(Protocol):
    async def resolve(self, uri: str) -> list[Hop]:
        """Hops to try in order; raises ResolveError when there is none."""
        ...


def default_transport(uri: SipURI) -> str:
    """RFC 3263 §4.1 without NAPTR: the transport parameter, else TLS for sips, else UDP."""
    if uri.transport:
        return uri.transport
    return "tls" if uri.secure else "udp"


def default_port(transport: str) -> int:
    return 5061 if transport in ("tls", "wss") else 5060


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class SimpleResolver:
    """IP literals and A/AAAA lookups through the event loop's getaddrinfo."""

    def __init__(self, timeout: float = 2.0) -> None:
        self._timeout = timeout

    async def resolve(self, uri: str) -> list[Hop]:
        try:
            parsed = parse_uri(uri)
        except ParseError as exc:
            raise ResolveError(416, f"cannot resolve {uri!r}: {exc}") from None
        if not isinstance(parsed, SipURI):
            raise ResolveError(416, f"cannot resolve a non-SIP URI {uri!r}")
        target = parsed.maddr or parsed.host
        transport = default_transport(parsed)
        port = parsed.port or default_port(transport)
        literal = _ip_literal(target)
        if literal is not None:
            return [Hop(transport, literal, port)]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(target, port, type=socket.SOCK_DGRAM)
        except TimeoutError:
            raise ResolveError(408, f"DNS did not answer for {target!r}") from None
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise ResolveError(404, f"{target!r} does not resolve") from None
            raise ResolveError(503, f"DNS failure for {target!r}: {exc}") from None
        hops: list[Hop] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            hop = Hop(transport, str(sockaddr[0]), port)
            if hop not in hops:
                hops.append(hop)
        if not hops:
            raise ResolveError(404, f"{target!r} has no address")
        return hops
