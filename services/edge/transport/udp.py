"""UDP listener: the cheapest receive path the event loop allows.

``datagram_received`` hands the datagram straight to the sink: no task, no log
line, no copy; the :class:`Flow` of a peer is built once and cached. Datagrams
above the size cap are dropped (counted), and so are bare CRLF keep-alives that
some user agents send over UDP (RFC 5626 §3.5.1 applies to streams; on UDP they
are noise for the parser).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from sipmesh.edge.transport.base import Flow, ListenerSpec, MessageSink, TransportError
from sipmesh.edge.transport.flows import normalize_ip
from sipmesh.edge.transport.stats import TransportStats

__all__ = ["MAX_UDP_PAYLOAD", "UdpListener"]

log = logging.getLogger(__name__)

# The largest payload one IPv4 UDP datagram can carry (65535 - 8 - 20).
MAX_UDP_PAYLOAD = 65507
# Cached peer flows; cleared wholesale when full (cheaper than an LRU per packet).
_FLOW_CACHE_MAX = 65536


class UdpListener(asyncio.DatagramProtocol):
    """One bound UDP socket of a ``udp:HOST:PORT`` listener."""

    def __init__(
        self,
        spec: ListenerSpec,
        sink: MessageSink,
        stats: TransportStats,
        clock: Callable[[], float],
        max_message_size: int,
    ) -> None:
        self.spec = spec
        self._sink = sink
        self._clock = clock
        self._max = max_message_size
        self._oversize = stats.drop_oversize.labels("udp")
        self._keepalives = stats.rcv_keepalives.labels("udp")
        self._send_errors = stats.drop_send.labels("udp")
        self._flows: dict[object, Flow] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = (spec.host, spec.port)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not every loop's datagram transport subclasses asyncio.DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)
        sockname = transport.get_extra_info("sockname")
        self.local = (normalize_ip(str(sockname[0])), int(sockname[1]))

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) > self._max:
            self._oversize.inc()
            return
        if data[:1] == b"\r" and not data.strip(b"\r\n"):
            self._keepalives.inc()
            return
        flow = self._flows.get(addr)
        if flow is None:
            flow = self._flow_for(addr)
        self._sink.on_message(data, flow, self._clock())

    def _flow_for(self, addr: tuple[object, ...]) -> Flow:
        if len(self._flows) >= _FLOW_CACHE_MAX:
            self._flows.clear()
        ip = normalize_ip(str(addr[0]))
        port = int(str(addr[1]))
        flow = self.make_flow(ip, port)
        self._flows[addr] = flow
        return flow

    def make_flow(self, ip: str, port: int) -> Flow:
        name = self.spec.name
        return Flow("udp", (ip, port), self.local, name, f"udp|{name}|{ip}|{port}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: UDP has no connection to tear down.
        log.debug("udp %s: %s", self.spec.name, exc)

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise TransportError(f"{self.spec.name}: listener closed")
        if len(data) > MAX_UDP_PAYLOAD:
            self._send_errors.inc()
            # RFC 3261 §18.1.1: too large for UDP; the caller must use a stream transport.
            raise TransportError(f"{self.spec.name}: {len(data)} bytes do not fit a UDP datagram")
        transport.sendto(data, remote)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
