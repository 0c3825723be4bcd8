"""The edge's SIP transports: UDP, TCP, TLS, WebSocket (RFC 7118), SCTP (RFC 4168)."""

from sipmesh.edge.transport.base import (
    SECURE_TRANSPORTS,
    STREAM_TRANSPORTS,
    Flow,
    ListenerInfo,
    MessageSink,
    TransportError,
    parse_listener,
)
from sipmesh.edge.transport.manager import TransportManager

__all__ = [
    "SECURE_TRANSPORTS",
    "STREAM_TRANSPORTS",
    "Flow",
    "ListenerInfo",
    "MessageSink",
    "TransportError",
    "TransportManager",
    "parse_listener",
]
