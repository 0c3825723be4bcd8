"""The connection (flow) table: every open TCP/TLS/WS connection of this process.

It answers the questions of RFC 3261 §18 and RFC 5626 the transports need: which
connection does a flow id name (a response goes back over the connection its
request came in on, §18.2.2), is there already a connection to this peer that a
new request can reuse (§18.1.1), may another connection be accepted (the caps that
keep one source, or everyone together, from exhausting the process). Aliases map a
further (ip, port) to a connection, like Kamailio's tcp aliases (RFC 5923): the
edge core adds one when a Via says the peer listens on the port it connected from.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from sipmesh.edge.transport.base import Flow

__all__ = ["Connection", "FlowTable", "normalize_ip"]


class Connection(Protocol):
    """One open stream connection, whatever its transport."""

    @property
    def flow(self) -> Flow: ...

    @property
    def incoming(self) -> bool: ...

    def write(self, data: bytes) -> None:
        """Queue ``data``; raises TransportError when the connection is closing."""

    def close(self) -> None: ...


def normalize_ip(host: str) -> str:
    """One spelling per address, so lookups by (ip, port) match (``::01`` → ``::1``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return host.lower()


class FlowTable:
    """Connections by flow id, by peer address (incl. aliases) and counted by source."""

    def __init__(self, max_connections: int, max_per_source: int) -> None:
        self.max_connections = max_connections
        self.max_per_source = max_per_source  # 0: no cap
        self._by_id: dict[str, Connection] = {}
        self._by_peer: dict[tuple[str, str, int], Connection] = {}
        self._aliases: dict[str, list[tuple[str, str, int]]] = {}
        self._per_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def connections(self) -> list[Connection]:
        return list(self._by_id.values())

    def refusal(self, source_ip: str, *, incoming: bool) -> str | None:
        """Why another connection (from ``source_ip`` if incoming) is refused, or None."""
        if len(self._by_id) >= self.max_connections:
            return f"tcp_max_connections ({self.max_connections}) reached"
        if (
            incoming
            and self.max_per_source
            and self._per_source.get(source_ip, 0) >= self.max_per_source
        ):
            return f"{source_ip} has tcp_max_connections_per_source ({self.max_per_source})"
        return None

    def add(self, conn: Connection) -> None:
        flow = conn.flow
        self._by_id[flow.flow_id] = conn
        # A newer connection to the same peer wins the lookup: it is the one most
        # likely to be alive (the older one may be half-open).
        self._by_peer[(flow.transport, flow.remote[0], flow.remote[1])] = conn
        if conn.incoming:
            ip = flow.remote[0]
            self._per_source[ip] = self._per_source.get(ip, 0) + 1

    def remove(self, conn: Connection) -> bool:
        flow = conn.flow
        if self._by_id.get(flow.flow_id) is not conn:
            return False
        del self._by_id[flow.flow_id]
        keys = [(flow.transport, flow.remote[0], flow.remote[1])]
        keys.extend(self._aliases.pop(flow.flow_id, ()))
        for key in keys:
            if self._by_peer.get(key) is conn:
                del self._by_peer[key]
        if conn.incoming:
            ip = flow.remote[0]
            left = self._per_source.get(ip, 0) - 1
            if left > 0:
                self._per_source[ip] = left
            else:
                self._per_source.pop(ip, None)
        return True

    def get(self, flow_id: str) -> Connection | None:
        return self._by_id.get(flow_id)

    def find(self, transport: str, ip: str, port: int) -> Connection | None:
        """An open connection of ``transport`` to ``ip:port`` (its address or an alias)."""
        return self._by_peer.get((transport, normalize_ip(ip), port))

    def add_alias(self, flow_id: str, ip: str, port: int) -> bool:
        """Let requests for ``ip:port`` reuse connection ``flow_id``; False if it is gone."""
        conn = self._by_id.get(flow_id)
        if conn is None:
            return False
        key = (conn.flow.transport, normalize_ip(ip), port)
        self._by_peer[key] = conn
        self._aliases.setdefault(flow_id, []).append(key)
        return True

    def per_source(self, ip: str) -> int:
        return self._per_source.get(normalize_ip(ip), 0)
