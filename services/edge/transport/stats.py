"""Connection statistics with Kamailio's names (core tcp:*, tls:*, websocket ws_*).

Registered on the registry the runtime passes in (never the global one), prefixed
``sipmesh_`` as every sipmesh statistic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["TransportStats"]


class TransportStats:
    """The transport layer's counters and gauges, labelled by transport."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        # tcp:current_opened_connections counts every connection the stream
        # transports hold (tcp, tls, ws, wss), as Kamailio's TCP core does.
        self.current_opened_connections = Gauge(
            "sipmesh_tcp_current_opened_connections",
            "open TCP/TLS/WS connections",
            ["transport"],
            registry=reg,
        )
        self.established = Counter(
            "sipmesh_tcp_established",
            "connections established (accepted: passive, opened by us: active)",
            ["transport", "direction"],
            registry=reg,
        )
        self.connect_failed = Counter(
            "sipmesh_tcp_connect_failed",
            "outgoing connections that could not be opened",
            ["transport"],
            registry=reg,
        )
        self.local_reject = Counter(
            "sipmesh_tcp_local_reject",
            "connections refused by the total or per-source cap",
            ["transport"],
            registry=reg,
        )
        self.con_timeout = Counter(
            "sipmesh_tcp_con_timeout",
            "connections closed because idle beyond tcp_connection_lifetime",
            ["transport"],
            registry=reg,
        )
        self.read_timeout = Counter(
            "sipmesh_tcp_read_timeout",
            "connections closed for holding an incomplete message beyond tcp_read_timeout",
            ["transport"],
            registry=reg,
        )
        self.con_reset = Counter(
            "sipmesh_tcp_con_reset",
            "connections reset or lost by the peer",
            ["transport"],
            registry=reg,
        )
        self.tls_opened_connections = Gauge(
            "sipmesh_tls_opened_connections", "open TLS and WSS connections", registry=reg
        )
        self.ws_current_connections = Gauge(
            "sipmesh_ws_current_connections",
            "open WebSocket connections (ws and wss)",
            registry=reg,
        )
        self.drop_oversize = Counter(
            "sipmesh_drop_oversize_messages",
            "messages dropped (or connections closed) for exceeding max_message_size",
            ["transport"],
            registry=reg,
        )
        self.drop_send = Counter(
            "sipmesh_drop_send_errors",
            "messages that could not be sent",
            ["transport"],
            registry=reg,
        )
        self.rcv_keepalives = Counter(
            "sipmesh_rcv_keepalives",
            "CRLF keep-alives received (RFC 5626 §3.5.1)",
            ["transport"],
            registry=reg,
        )

    def opened(self, transport: str, direction: str) -> None:
        self.current_opened_connections.labels(transport).inc()
        self.established.labels(transport, direction).inc()
        if transport in ("tls", "wss"):
            self.tls_opened_connections.inc()
        if transport in ("ws", "wss"):
            self.ws_current_connections.inc()

    def closed(self, transport: str) -> None:
        self.current_opened_connections.labels(transport).dec()
        if transport in ("tls", "wss"):
            self.tls_opened_connections.dec()
        if transport in ("ws", "wss"):
            self.ws_current_connections.dec()
