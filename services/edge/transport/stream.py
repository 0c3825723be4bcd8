"""TCP and TLS connections: framing, keep-alives, read timeout, idle lifetime.

One :class:`StreamConnection` (an asyncio protocol, no task per connection) per
socket, accepted or dialled. Bytes go through the sans-IO framer; whole messages go
to the sink as they are cut, CRLFCRLF pings get a CRLF pong (RFC 5626 §3.5.1). A
connection dies when the peer holds an incomplete message longer than the read
timeout (so half a message followed by silence cannot pin the buffer), when it
is idle longer than the connection lifetime (Kamailio's tcp_connection_lifetime),
when a message exceeds the size cap, or when the peer stops reading our writes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from sipmesh.edge.transport.base import Flow, MessageSink, TransportError
from sipmesh.edge.transport.flows import FlowTable, normalize_ip
from sipmesh.edge.transport.stats import TransportStats
from sipmesh.sip.framer import (
    PONG,
    BadMessage,
    FramingError,
    MessageReceived,
    PingReceived,
    StreamFramer,
)

__all__ = ["StreamConnection", "StreamContext", "peer_subject"]

log = logging.getLogger(__name__)

# A peer that lets this much of our output pile up is not reading: drop it rather
# than buffer without bound (Kamailio's tcp_conn_wq_max plays the same role).
WRITE_BUFFER_CAP = 4 * 1024 * 1024


@dataclass(slots=True)
class StreamContext:
    """What every stream connection of one TransportManager shares."""

    sink: MessageSink
    table: FlowTable
    stats: TransportStats
    clock: Callable[[], float]
    max_message_size: int
    read_timeout: float
    lifetime: float
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    # Connection ids unique across restarts and instances (a flow id may end up in
    # a shared store next to another instance's ids).
    _boot: str = field(default_factory=lambda: secrets.token_hex(4))

    def new_flow_id(self, transport: str) -> str:
        return f"{transport}|conn|{self._boot}-{next(self._ids)}"


def peer_subject(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The verified client certificate's subject as ``CN=…,O=…`` ('' when none)."""
    if ssl_object is None:
        return ""
    cert = ssl_object.getpeercert()
    if not cert:
        return ""
    parts: list[str] = []
    for rdn in cert.get("subject", ()):
        for pair in rdn:
            key, value = str(pair[0]), str(pair[1])
            short = {"commonName": "CN", "organizationName": "O", "countryName": "C"}.get(key, key)
            parts.append(f"{short}={value}")
    return ",".join(parts)


def _addr(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) >= 2:
        return normalize_ip(str(value[0])), int(value[1])
    return ("", 0)


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection (``transport_name`` "tcp" or "tls")."""

    def __init__(
        self, ctx: StreamContext, transport_name: str, listener: str, *, incoming: bool
    ) -> None:
        self._ctx = ctx
        self._name = transport_name
        self._listener = listener
        self._incoming = incoming
        self._framer = StreamFramer(ctx.max_message_size)
        self._transport: asyncio.Transport | None = None
        self._flow: Flow | None = None
        self._registered = False
        self._closing = False
        self._last_activity = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # -- Connection protocol (flows.py) ------------------------------------------
    @property
    def flow(self) -> Flow:
        assert self._flow is not None, "flow read before connection_made"
        return self._flow

    @property
    def incoming(self) -> bool:
        return self._incoming

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self._closing or transport.is_closing():
            raise TransportError(f"{self._name} connection {self._flow_id()} is closed")
        transport.write(data)
        self._last_activity = self._loop.time()
        if transport.get_write_buffer_size() > WRITE_BUFFER_CAP:
            log.info("closing %s: peer does not read (write buffer full)", self._flow_id())
            self._ctx.stats.drop_send.labels(self._name).inc()
            self.abort()

    def close(self) -> None:
        """Close after flushing what is queued."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: cast, not isinstance.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        remote = _addr(transport.get_extra_info("peername"))
        local = _addr(transport.get_extra_info("sockname"))
        ctx = self._ctx
        subject = ""
        if self._name == "tls":
            subject = peer_subject(transport.get_extra_info("ssl_object"))
        self._flow = Flow(
            self._name, remote, local, self._listener, ctx.new_flow_id(self._name), subject
        )
        if self._incoming:
            # Outgoing connections were admitted before dialling (manager.py).
            reason = ctx.table.refusal(remote[0], incoming=True)
            if reason is not None:
                log.debug("refusing %s connection from %s: %s", self._name, remote, reason)
                ctx.stats.local_reject.labels(self._name).inc()
                self.abort()
                return
        ctx.table.add(self)
        self._registered = True
        ctx.stats.opened(self._name, "passive" if self._incoming else "active")
        self._last_activity = self._loop.time()
        self._idle_timer = self._loop.call_later(ctx.lifetime, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        ctx = self._ctx
        self._last_activity = self._loop.time()
        completed = False
        for event in self._framer.feed(data):
            if isinstance(event, MessageReceived | BadMessage):
                # A framed but unparsable message still goes up: the edge core
                # answers it (400 …) and the stream stays in sync.
                completed = True
                ctx.sink.on_message(event.raw, self.flow, ctx.clock())
                if self._transport is None or self._transport.is_closing():
                    return  # the sink closed this flow
            elif isinstance(event, PingReceived):
                ctx.stats.rcv_keepalives.labels(self._name).inc()
                assert self._transport is not None
                self._transport.write(PONG)
            elif isinstance(event, FramingError):
                if event.error.status_hint == 413:
                    ctx.stats.drop_oversize.labels(self._name).inc()
                log.debug("closing %s: %s", self._flow_id(), event.error)
                self.abort()
                return
            # PongReceived: nothing to do (we never ping a client).
        # The read timeout runs from the last whole message while bytes of an
        # incomplete one are held (a slow-loris peer is not rescued by trickling).
        if completed and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._framer.buffered:
            if self._read_timer is None:
                self._read_timer = self._loop.call_later(ctx.read_timeout, self._read_timed_out)
        elif self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def eof_received(self) -> bool | None:
        return None  # close our side too: SIP has no use for half-closed streams

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for timer in (self._read_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._read_timer = self._idle_timer = None
        if not self._registered:
            return
        self._registered = False
        ctx = self._ctx
        ctx.table.remove(self)
        ctx.stats.closed(self._name)
        if exc is not None:
            ctx.stats.con_reset.labels(self._name).inc()
        ctx.sink.on_flow_closed(self.flow)

    # -- timers --------------------------------------------------------------------
    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._framer.buffered and not self._closing:
            self._ctx.stats.read_timeout.labels(self._name).inc()
            log.debug("closing %s: incomplete message past the read timeout", self._flow_id())
            self.abort()

    def _check_idle(self) -> None:
        # One timer per connection, re-armed lazily: reads and writes only stamp
        # _last_activity, so the hot path never touches the timer heap.
        self._idle_timer = None
        if self._closing:
            return
        idle = self._loop.time() - self._last_activity
        lifetime = self._ctx.lifetime
        if idle >= lifetime:
            self._ctx.stats.con_timeout.labels(self._name).inc()
            log.debug("closing %s: idle for %.0f s", self._flow_id(), idle)
            self.close()
        else:
            self._idle_timer = self._loop.call_later(lifetime - idle, self._check_idle)

    def _flow_id(self) -> str:
        return self._flow.flow_id if self._flow is not None else self._name
