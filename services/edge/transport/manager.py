"""TransportManager: every listener of an edge process and the connections it holds.

The edge core talks to this class only: messages come up through the
:class:`MessageSink`; replies go back with :meth:`send` over the flow a request came
in on (RFC 3261 §18.2.2), requests leave with :meth:`send_to`, which reuses an open
connection to the destination (§18.1.1, RFC 5626 §5.3) before dialling a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server as WsServer

from sipmesh.edge.transport.base import (
    Flow,
    ListenerInfo,
    ListenerSpec,
    MessageSink,
    TransportError,
    family_of,
    parse_listener,
)
from sipmesh.edge.transport.flows import Connection, FlowTable, normalize_ip
from sipmesh.edge.transport.sctp import SctpListener, open_sctp_socket
from sipmesh.edge.transport.stats import TransportStats
from sipmesh.edge.transport.stream import StreamConnection, StreamContext
from sipmesh.edge.transport.tls import client_context, server_context
from sipmesh.edge.transport.udp import UdpListener
from sipmesh.edge.transport.ws import dial_ws, start_ws_server
from sipmesh.runtime.sections.edge import EdgeConfig

__all__ = ["TransportManager"]

log = logging.getLogger(__name__)

_Datagram = UdpListener | SctpListener


class TransportManager:
    """Binds the configured listeners and moves SIP messages in and out."""

    def __init__(
        self,
        listeners: Sequence[str],
        sink: MessageSink,
        config: EdgeConfig,
        *,
        clock: Callable[[], float] = time.time,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        self._specs = [parse_listener(item) for item in listeners]
        names = [spec.name for spec in self._specs]
        if len(set(names)) != len(names):
            raise TransportError(f"listener given twice: {names}")
        self._sink = sink
        self._config = config
        self._clock = clock
        self.stats = TransportStats(metrics)
        self._table = FlowTable(config.tcp_max_connections, config.tcp_max_connections_per_source)
        self._datagram: dict[str, _Datagram] = {}
        self._servers: list[asyncio.Server] = []
        self._ws_servers: list[WsServer] = []
        self._infos: list[ListenerInfo] = []
        self._pending: dict[tuple[str, str, int], asyncio.Future[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._client_tls: ssl.SSLContext | None = None
        self._ctx: StreamContext | None = None
        self._advertise = _parse_advertise(config.advertise)
        # SIP capture of sent messages (sipmesh.observe.capture); None: no work at all.
        self.mirror: Callable[[bytes, Flow], None] | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every listener; on any failure release what was bound and raise."""
        config = self._config
        self._ctx = StreamContext(
            self._sink,
            self._table,
            self.stats,
            self._clock,
            config.max_message_size,
            config.tcp_read_timeout,
            config.tcp_connection_lifetime,
        )
        try:
            for spec in self._specs:
                host, port = await self._bind(spec)
                self._infos.append(
                    ListenerInfo(
                        spec.name,
                        spec.transport,
                        host,
                        port,
                        spec.family,
                        self._advertised(host, port, spec.family),
                    )
                )
        except BaseException:
            await self._close_listeners()
            self._infos.clear()
            raise

    async def _bind(self, spec: ListenerSpec) -> tuple[str, int]:
        assert self._ctx is not None
        ctx = self._ctx
        config = self._config
        loop = asyncio.get_running_loop()
        reuse = config.reuse_port
        try:
            if spec.transport == "udp":
                dgram, proto = await loop.create_datagram_endpoint(
                    lambda: UdpListener(
                        spec, self._sink, self.stats, self._clock, config.max_message_size
                    ),
                    local_addr=(spec.host, spec.port),
                    family=spec.family,
                    reuse_port=reuse or None,
                )
                self._datagram[spec.name] = proto
                # connection_made may not have run yet: ask the transport itself.
                proto.connection_made(dgram)
                return proto.local
            if spec.transport == "sctp":
                sock = open_sctp_socket(spec, reuse_port=reuse)
                listener = SctpListener(
                    spec, sock, self._sink, self.stats, self._clock, config.max_message_size
                )
                self._datagram[spec.name] = listener
                return listener.local
            tls = server_context(config, spec.name) if spec.transport in ("tls", "wss") else None
            if spec.transport in ("ws", "wss"):
                ws_server = await start_ws_server(
                    spec,
                    ctx,
                    config.ws_origins,
                    tls,
                    reuse_port=reuse,
                    open_timeout=config.tcp_read_timeout,
                )
                self._ws_servers.append(ws_server)
                return _bound(ws_server.sockets)
            server = await loop.create_server(
                lambda: StreamConnection(ctx, spec.transport, spec.name, incoming=True),
                spec.host,
                spec.port,
                family=spec.family,
                ssl=tls,
                ssl_handshake_timeout=config.tcp_read_timeout if tls is not None else None,
                reuse_port=reuse or None,
                backlog=1024,
            )
            self._servers.append(server)
            return _bound(server.sockets)
        except TransportError:
            raise
        except OSError as exc:
            raise TransportError(f"{spec.name}: cannot bind: {exc.strerror or exc}") from None

    async def stop(self, grace: float) -> None:
        """Stop accepting, let connections finish for up to ``grace`` s, close the rest."""
        for server in self._servers:
            server.close()
        for ws_server in self._ws_servers:
            # Stop listening only; open WebSocket connections are drained below.
            ws_server.close(close_connections=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Polling is fine here: it runs once, at shutdown.
        while len(self._table) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        for conn in self._table.connections():
            conn.close()
        for fut in self._pending.values():
            fut.cancel()
        # Give graceful closes a moment, then cut what is left.
        end = loop.time() + 1.0
        while len(self._table) and loop.time() < end:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for conn in self._table.connections():
            if isinstance(conn, StreamConnection):
                conn.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_listeners()

    async def _close_listeners(self) -> None:
        for listener in self._datagram.values():
            listener.close()
        for listener in self._datagram.values():
            if isinstance(listener, UdpListener):
                # The socket is released on a later loop turn: wait, so that a
                # restart in the same process can bind the port again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(listener.closed), 1.0)
        self._datagram.clear()
        for server in self._servers:
            server.close()
        for ws_server in self._ws_servers:
            ws_server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        for ws_server in self._ws_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws_server.wait_closed(), 1.0)
        self._servers.clear()
        self._ws_servers.clear()

    # -- what the edge core asks -------------------------------------------------------
    def listeners(self) -> list[ListenerInfo]:
        return list(self._infos)

    def sip_address(self, transport: str, family: int) -> tuple[str, int]:
        """Host and port for Via/Record-Route on ``transport`` (advertise or bound)."""
        transport = transport.lower()
        same = [i for i in self._infos if i.transport == transport]
        if not same:
            raise TransportError(f"no {transport} listener")
        for info in same:
            if info.family == family:
                return info.advertised
        return same[0].advertised

    def flow(self, flow_id: str) -> Flow | None:
        """The flow named ``flow_id`` if it still exists (UDP/SCTP: while the listener does)."""
        if flow_id.startswith(("udp|", "sctp|")):
            parts = flow_id.split("|")
            if len(parts) != 4 or not parts[3].isdigit():
                return None
            listener = self._datagram.get(parts[1])
            return listener.make_flow(parts[2], int(parts[3])) if listener is not None else None
        conn = self._table.get(flow_id)
        return conn.flow if conn is not None else None

    def flows(self) -> list[Flow]:
        """Every open connection (for the admin API and statistics)."""
        return [conn.flow for conn in self._table.connections()]

    def add_alias(self, flow_id: str, host: str, port: int) -> bool:
        """Route later requests for ``host:port`` over connection ``flow_id`` (RFC 5923)."""
        return self._table.add_alias(flow_id, host, port)

    def close_flow(self, flow_id: str) -> bool:
        conn = self._table.get(flow_id)
        if conn is None:
            return False
        conn.close()
        return True

    def send(self, data: bytes, flow: Flow) -> None:
        """Send over ``flow``: the same UDP socket to its peer, or its connection."""
        if self.mirror is not None:
            self.mirror(data, flow)
        if flow.transport in ("udp", "sctp"):
            listener = self._datagram.get(flow.listener)
            if listener is None:
                raise TransportError(f"{flow.listener}: no such listener")
            listener.send(data, flow.remote)
            return
        conn = self._table.get(flow.flow_id)
        if conn is None:
            self.stats.drop_send.labels(flow.transport).inc()
            raise TransportError(f"{flow.transport} connection {flow.flow_id} is gone")
        conn.write(data)

    async def send_to(
        self, data: bytes, transport: str, host: str, port: int, *, flow_id: str | None = None
    ) -> Flow:
        """Send to a destination, reusing the flow or a connection to it when there is one."""
        transport = transport.lower()
        if flow_id:
            known = self.flow(flow_id)
            if known is not None:
                self.send(data, known)
                return known
        ip = await self._resolve(host, port, transport)
        if transport in ("udp", "sctp"):
            listener = self._datagram_for(transport, family_of(ip))
            flow = listener.make_flow(ip, port)
            listener.send(data, (ip, port))
            if self.mirror is not None:
                self.mirror(data, flow)
            return flow
        if transport not in ("tcp", "tls", "ws", "wss"):
            raise TransportError(f"unknown transport {transport!r}")
        conn = self._table.find(transport, ip, port)
        if conn is None:
            conn = await self._connection_to(transport, ip, port, host)
        conn.write(data)
        if self.mirror is not None:
            self.mirror(data, conn.flow)
        return conn.flow

    # -- internals ---------------------------------------------------------------------
    def _datagram_for(self, transport: str, family: int) -> _Datagram:
        for listener in self._datagram.values():
            if listener.spec.transport == transport and listener.spec.family == family:
                return listener
        raise TransportError(
            f"no {transport} listener for IPv{6 if family == socket.AF_INET6 else 4}"
        )

    async def _resolve(self, host: str, port: int, transport: str) -> str:
        bare = host.strip("[]")
        try:
            return ipaddress.ip_address(bare).compressed
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        try:
            infos = await loop.getaddrinfo(bare, port, type=kind)
        except OSError as exc:
            raise TransportError(f"cannot resolve {host}: {exc}") from exc
        families = {i.family for i in self._infos if i.transport == transport}
        for family, _, _, _, sockaddr in infos:
            if not families or family in families:
                return normalize_ip(str(sockaddr[0]))
        raise TransportError(f"{host}: no address of a family with a {transport} listener")

    async def _connection_to(self, transport: str, ip: str, port: int, host: str) -> Connection:
        # Concurrent requests to the same peer share one dial (§18.1.1: one connection).
        key = (transport, ip, port)
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            conn = await self._dial(transport, ip, port, host)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            fut.exception()  # retrieved here: waiters get it, nobody logs it as lost
            raise
        else:
            fut.set_result(conn)
            return conn
        finally:
            self._pending.pop(key, None)

    async def _dial(self, transport: str, ip: str, port: int, host: str) -> Connection:
        assert self._ctx is not None, "send_to before start"
        reason = self._table.refusal(ip, incoming=False)
        if reason is not None:
            self.stats.local_reject.labels(transport).inc()
            raise TransportError(f"{transport} to {ip}:{port} refused: {reason}")
        secure = transport in ("tls", "wss")
        tls = self._tls_client() if secure else None
        server_name = host.strip("[]")
        listener = self._listener_name(transport, family_of(ip))
        timeout = self._config.tcp_connect_timeout
        try:
            if transport in ("ws", "wss"):
                conn, task = await dial_ws(
                    transport,
                    ip,
                    port,
                    self._ctx,
                    listener,
                    tls,
                    server_hostname=server_name,
                    connect_timeout=timeout,
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return conn
            ctx = self._ctx
            _, proto = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    lambda: StreamConnection(ctx, transport, listener, incoming=False),
                    ip,
                    port,
                    ssl=tls,
                    server_hostname=server_name if tls is not None else None,
                ),
                timeout,
            )
        except TransportError:
            self.stats.connect_failed.labels(transport).inc()
            raise
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self.stats.connect_failed.labels(transport).inc()
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise TransportError(f"{transport} connect to {ip}:{port}: {why}") from None
        if self._table.get(proto.flow.flow_id) is None:
            raise TransportError(f"{transport} connection to {ip}:{port} closed at once")
        return proto

    def _tls_client(self) -> ssl.SSLContext:
        if self._client_tls is None:
            self._client_tls = client_context(self._config)
        return self._client_tls

    def _listener_name(self, transport: str, family: int) -> str:
        for info in self._infos:
            if info.transport == transport and info.family == family:
                return info.name
        return f"{transport}:outgoing"

    def _advertised(self, host: str, port: int, family: int) -> tuple[str, int]:
        if self._advertise is not None:
            adv_host, adv_port = self._advertise
            return adv_host, adv_port or port
        if host in ("0.0.0.0", "::"):
            return _primary_address(family), port
        return host, port


def _bound(sockets: Sequence[socket.socket]) -> tuple[str, int]:
    name = sockets[0].getsockname()
    return normalize_ip(str(name[0])), int(name[1])


def _parse_advertise(text: str) -> tuple[str, int] | None:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` → (host, port or 0)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else 0
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            raise TransportError(f"edge.advertise {text!r}: bad port")
        return host, int(port)
    return text, 0


def _primary_address(family: int) -> str:
    """The address this host uses towards the world, for a wildcard listener's Via.

    A connected UDP socket sends nothing; connecting only makes the kernel pick the
    source address (documentation prefixes RFC 5737 / RFC 3849 as the target).
    """
    target = ("2001:db8::1", 9) if family == socket.AF_INET6 else ("192.0.2.1", 9)
    fallback = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(target)
            return normalize_ip(str(probe.getsockname()[0]))
    except OSError:
        return fallback
