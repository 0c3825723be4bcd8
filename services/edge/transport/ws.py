"""WebSocket and secure WebSocket transports (RFC 7118) over the ``websockets`` library.

The handshake must negotiate the ``sip`` subprotocol (RFC 7118 §4.1: a client that
does not offer it is refused with 400); the Origin header, when the browser sends
one, must be in ``ws_origins`` unless that list is empty (403 otherwise; non-browser
clients send no Origin and are let in). Each text or binary frame carries exactly
one SIP message (RFC 7118 §5.1); a frame of bare CRLFs is a keep-alive and a
double CRLF is answered with a CRLF frame as on TCP. Sends are queued and written
by one writer task per connection, since ``websockets`` sends are coroutines and
the edge core's ``send`` is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from http import HTTPStatus

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from sipmesh.edge.transport.base import Flow, ListenerSpec, TransportError
from sipmesh.edge.transport.flows import normalize_ip
from sipmesh.edge.transport.stream import StreamContext, peer_subject

__all__ = ["WsConnection", "dial_ws", "start_ws_server"]

log = logging.getLogger(__name__)

SIP = Subprotocol("sip")
# Frames queued for a peer that does not read before the connection is dropped.
_QUEUE_CAP = 1024
# 1009: message too big (RFC 6455 §7.4.1), sent by websockets when max_size is hit.
_TOO_BIG = 1009


def _addr(value: object) -> tuple[str, int]:
    if isinstance(value, tuple) and len(value) >= 2:
        return normalize_ip(str(value[0])), int(value[1])
    return ("", 0)


class WsConnection:
    """One WebSocket connection, in the flow table like a TCP one."""

    def __init__(
        self,
        ws: ServerConnection | ClientConnection,
        ctx: StreamContext,
        transport_name: str,
        listener: str,
        *,
        incoming: bool,
        origin: str = "",
    ) -> None:
        self._ws = ws
        self._ctx = ctx
        self._name = transport_name
        self._incoming = incoming
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._last_activity = self._loop.time()
        self._idle: asyncio.TimerHandle | None = None
        subject = ""
        if transport_name == "wss":
            subject = peer_subject(ws.transport.get_extra_info("ssl_object"))
        self._flow = Flow(
            transport_name,
            _addr(ws.remote_address),
            _addr(ws.local_address),
            listener,
            ctx.new_flow_id(transport_name),
            subject,
            origin,
        )
        # In the table from the start, so a flow id handed out is found at once.
        ctx.table.add(self)
        ctx.stats.opened(transport_name, "passive" if incoming else "active")

    @property
    def flow(self) -> Flow:
        return self._flow

    @property
    def incoming(self) -> bool:
        return self._incoming

    def write(self, data: bytes) -> None:
        if self._closing:
            raise TransportError(f"{self._name} connection {self._flow.flow_id} is closed")
        if self._queue.qsize() >= _QUEUE_CAP:
            self._ctx.stats.drop_send.labels(self._name).inc()
            self.close()
            raise TransportError(f"{self._flow.flow_id}: peer does not read, connection dropped")
        self._queue.put_nowait(data)
        self._last_activity = self._loop.time()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)  # the writer closes the connection

    async def run(self) -> None:
        """Serve the connection until it closes (the handler task of the connection)."""
        ctx = self._ctx
        writer = asyncio.create_task(self._writer())
        self._idle = self._loop.call_later(ctx.lifetime, self._check_idle)
        try:
            async for frame in self._ws:
                self._last_activity = self._loop.time()
                data = frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)
                if not data.strip(b"\r\n"):
                    # CRLF keep-alive inside a frame (SIP.js and others do this).
                    ctx.stats.rcv_keepalives.labels(self._name).inc()
                    if b"\r\n\r\n" in data and not self._closing:
                        self._queue.put_nowait(b"\r\n")
                    continue
                ctx.sink.on_message(data, self._flow, ctx.clock())
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == _TOO_BIG:
                ctx.stats.drop_oversize.labels(self._name).inc()
            elif exc.rcvd is None:
                ctx.stats.con_reset.labels(self._name).inc()
        finally:
            if self._idle is not None:
                self._idle.cancel()
            self._closing = True
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            ctx.table.remove(self)
            ctx.stats.closed(self._name)
            ctx.sink.on_flow_closed(self._flow)

    async def _writer(self) -> None:
        ws = self._ws
        try:
            while (data := await self._queue.get()) is not None:
                try:
                    # Text frames when the message is UTF-8 (what browsers' SIP stacks
                    # expect), binary otherwise (RFC 7118 §5.1 allows both).
                    await ws.send(data.decode("utf-8"))
                except UnicodeDecodeError:
                    await ws.send(data)
            await ws.close(1000, "closing")
        except ConnectionClosed:
            pass

    def _check_idle(self) -> None:
        if self._closing:
            return
        idle = self._loop.time() - self._last_activity
        if idle >= self._ctx.lifetime:
            self._ctx.stats.con_timeout.labels(self._name).inc()
            self.close()
        else:
            self._idle = self._loop.call_later(self._ctx.lifetime - idle, self._check_idle)


def _offers_sip(headers: Headers) -> bool:
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        if any(token.strip().lower() == "sip" for token in value.split(",")):
            return True
    return False


async def start_ws_server(
    spec: ListenerSpec,
    ctx: StreamContext,
    origins: list[str],
    ssl_context: ssl.SSLContext | None,
    *,
    reuse_port: bool,
    open_timeout: float,
) -> Server:
    """Bind a ws/wss listener; connections run until closed, in the flow table."""
    allowed = {o.rstrip("/").lower() for o in origins}

    def check(conn: ServerConnection, request: Request) -> Response | None:
        if not _offers_sip(request.headers):
            return conn.respond(HTTPStatus.BAD_REQUEST, "the sip subprotocol is required\n")
        origin = request.headers.get("Origin")
        if allowed and origin is not None and origin.rstrip("/").lower() not in allowed:
            return conn.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        ip = _addr(conn.remote_address)[0]
        if ctx.table.refusal(ip, incoming=True) is not None:
            ctx.stats.local_reject.labels(spec.transport).inc()
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "too many connections\n")
        return None

    async def handler(conn: ServerConnection) -> None:
        origin = conn.request.headers.get("Origin", "") if conn.request is not None else ""
        await WsConnection(conn, ctx, spec.transport, spec.name, incoming=True, origin=origin).run()

    return await serve(
        handler,
        spec.host,
        spec.port,
        subprotocols=[SIP],
        process_request=check,
        ssl=ssl_context,
        open_timeout=open_timeout,
        max_size=ctx.max_message_size,
        compression=None,
        logger=log,
        reuse_port=reuse_port or None,
    )


async def dial_ws(
    transport_name: str,
    host: str,
    port: int,
    ctx: StreamContext,
    listener: str,
    ssl_context: ssl.SSLContext | None,
    *,
    server_hostname: str,
    connect_timeout: float,
) -> tuple[WsConnection, asyncio.Task[None]]:
    """Open a ws/wss connection to a SIP WebSocket server (another proxy, RFC 7118 §5)."""
    literal = f"[{host}]" if ":" in host else host
    scheme = "wss" if transport_name == "wss" else "ws"
    extra: dict[str, object] = {}
    if ssl_context is not None:
        extra = {"ssl": ssl_context, "server_hostname": server_hostname}
    try:
        ws = await connect(
            f"{scheme}://{literal}:{port}/",
            subprotocols=[SIP],
            open_timeout=connect_timeout,
            max_size=ctx.max_message_size,
            compression=None,
            logger=log,
            **extra,  # type: ignore[arg-type]
        )
    except (OSError, InvalidHandshake, TimeoutError, ssl.SSLError) as exc:
        raise TransportError(f"{transport_name} connect to {host}:{port}: {exc}") from exc
    conn = WsConnection(ws, ctx, transport_name, listener, incoming=False)
    task = asyncio.create_task(conn.run())
    return conn, task
