"""What the transport layer hands to the edge core, and what the edge core hands back.

The transports are the only code of the edge that touches sockets (DESIGN.md,
principle 1). Everything above them sees whole SIP messages as ``bytes`` together
with the :class:`Flow` they came over, and answers through the same flow.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "SECURE_TRANSPORTS",
    "STREAM_TRANSPORTS",
    "TRANSPORTS",
    "Flow",
    "ListenerInfo",
    "ListenerSpec",
    "MessageSink",
    "TransportError",
    "family_of",
    "parse_listener",
    "udp_flow_id",
]

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss", "sctp")
# Connection-oriented transports: a response goes back over the connection the
# request came in on (RFC 3261 §18.2.2), the others address the peer directly.
STREAM_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})
# Transports whose hop is protected by TLS: what RFC 3261 §26.2.2 asks for a
# ``sips:`` URI (the edge core decides; the transport only tells).
SECURE_TRANSPORTS = frozenset({"tls", "wss"})


class TransportError(Exception):
    """A listener that cannot start, or a message that cannot be sent."""


@dataclass(frozen=True, slots=True)
class Flow:
    """Where a message came from / goes to: one UDP peer or one connection.

    ``flow_id`` is stable for the life of the flow: for connections a connection id
    unique to this process's run (RFC 5626 §5.2 flow), for datagram transports
    ``<transport>|<listener>|<ip>|<port>`` (the "flow" is the 5-tuple).
    """

    transport: str
    remote: tuple[str, int]
    local: tuple[str, int]
    listener: str
    flow_id: str
    tls_peer_subject: str = ""
    ws_origin: str = ""

    @property
    def secure(self) -> bool:
        """True when this hop is TLS-protected (tls, wss)."""
        return self.transport in SECURE_TRANSPORTS

    @property
    def reliable(self) -> bool:
        """True for connection-oriented transports (no retransmissions, RFC 3261 §17.1.1.2)."""
        return self.transport in STREAM_TRANSPORTS or self.transport == "sctp"


class MessageSink(Protocol):
    """The edge core, as seen by the transports."""

    def on_message(self, data: bytes, flow: Flow, received_at: float) -> None:
        """One whole SIP message (a datagram, or one framed from a stream/WS frame).

        Keep-alive CRLFs never arrive here: they are answered or absorbed below.
        Called from the event loop; it must not block.
        """

    def on_flow_closed(self, flow: Flow) -> None:
        """A connection (stream flow) has gone; sends over it will fail from now."""


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One ``PROTO:HOST:PORT`` listener of the configuration."""

    name: str  # the string as configured, e.g. "udp:[::1]:5070"
    transport: str
    host: str  # without brackets
    port: int  # 0: let the kernel pick (tests)

    @property
    def family(self) -> int:
        return family_of(self.host)


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """A bound listener: the real port and what goes into Via/Record-Route."""

    name: str
    transport: str
    host: str
    port: int
    family: int
    advertised: tuple[str, int]


_LISTEN = re.compile(r"^(udp|tcp|tls|ws|wss|sctp):(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})$")


def parse_listener(text: str) -> ListenerSpec:
    """``udp:0.0.0.0:5060``, ``tls:[::]:5061`` → a :class:`ListenerSpec`.

    Port 0 is accepted (ephemeral port, used by tests); the host must be an IP
    address because a listener binds to exactly one address.
    """
    match = _LISTEN.match(text.strip().lower())
    if match is None:
        raise TransportError(f"{text}: not PROTO:HOST:PORT (e.g. udp:0.0.0.0:5060)")
    transport, host, port_text = match.groups()
    host = host.strip("[]")
    port = int(port_text)
    if port > 65535:
        raise TransportError(f"{text}: port out of range")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise TransportError(f"{text}: {host!r} is not an IP address") from None
    return ListenerSpec(text.strip(), transport, host, port)


def family_of(host: str) -> int:
    """AF_INET6 for an IPv6 literal, else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_flow_id(transport: str, listener: str, ip: str, port: int) -> str:
    return f"{transport}|{listener}|{ip}|{port}"
