"""Fixtures of the edge core tests: an EdgeService on real 127.0.0.1 sockets with a
fake router (the edge's own collaborator, scripted per test) and small SIP peers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.edge.service import EdgeService, Transports
from sipmesh.edge.transport.base import MessageSink
from sipmesh.edge.transport.manager import TransportManager
from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.transaction import TimerConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV

LISTEN = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
Handler = Callable[[router_pb2.RouteRequest], Awaitable[router_pb2.Decision]]


class FakeRouter:
    """RouterClient scripted by the test: records every call, answers with ``handler``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.calls: list[router_pb2.RouteRequest] = []
        self.handler = handler

    async def route(
        self,
        request: router_pb2.RouteRequest,
        *,
        timeout: float | None = None,
    ) -> router_pb2.Decision:
        self.calls.append(request)
        assert self.handler is not None
        return await self.handler(request)

    def kinds(self) -> list[int]:
        return [c.kind for c in self.calls]


def make_config(**edge: Any) -> SipmeshConfig:
    base: dict[str, Any] = {"nat_keepalive": "none"}
    base.update(edge)
    return SipmeshConfig(
        listen=["udp:127.0.0.1:5060"],  # not bound: the tests bind port 0 (LISTEN)
        domains=["sipmesh.test"],
        instance_id="edge-" + secrets.token_hex(3),
        edge=base,
    )


async def start_edge(
    router: Any,
    *,
    kv: KVStore | None = None,
    peers: Any = None,
    timers: TimerConfig | None = None,
    bus: EventBus | None = None,
    media_relay: Any = None,
    event_streams: tuple[tuple[str, tuple[str, ...]], ...] = (),
    **edge: Any,
) -> EdgeService:
    config = make_config(**edge)

    async def relay_client() -> Any:
        return media_relay

    def transports(sink: MessageSink) -> Transports:
        return TransportManager(LISTEN, sink, config.edge)

    service = EdgeService(
        config,
        router=router,
        kv=kv if kv is not None else MemoryKV(),
        transports=transports,
        metrics=CollectorRegistry(),
        peers=peers,
        timers=timers or TimerConfig(t1=0.05, t2=0.4, t4=0.2, timer_d=0.2),
        bus=bus,
        media_relay=relay_client if media_relay is not None else None,
        event_streams=event_streams,
    )
    await service.start()
    return service


def udp_port(service: EdgeService) -> int:
    return next(i.port for i in service.transports.listeners() if i.transport == "udp")


class Peer(asyncio.DatagramProtocol):
    """A bare UDP SIP endpoint: sends what the test writes, queues what arrives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.raw: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.raw.append(data)
        if data.strip():
            self.inbox.put_nowait(parse_message(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes | str, port: int) -> None:
        assert self.transport is not None
        if isinstance(data, str):
            data = data.replace("\n", "\r\n").encode()
        self.transport.sendto(data, ("127.0.0.1", port))

    async def next(self, timeout: float = 5.0) -> Request | Response:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def next_response(self, timeout: float = 5.0) -> Response:
        while True:
            msg = await self.next(timeout)
            if isinstance(msg, Response):
                return msg

    async def next_request(self, timeout: float = 5.0) -> Request:
        while True:
            msg = await self.next(timeout)
            if isinstance(msg, Request):
                return msg

    def pending(self) -> list[Request | Response]:
        out = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    def reply(self, request: Request, status: int, reason: str, to_tag: str = "uas1") -> bytes:
        """A UAS response to ``request`` (all Vias copied, §8.2.6.2) sent back to the edge."""
        from sipmesh.sip.stateless import make_response

        resp = make_response(request, status, reason, to_tag=to_tag)
        if status < 300 and request.method == "INVITE" and status > 100:
            resp.add("Contact", f"<sip:uas@127.0.0.1:{self.port}>")
        return bytes(resp)


async def open_peer(host: str = "127.0.0.1") -> Peer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    return proto


@pytest.fixture
async def udp_peers() -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    made: list[Peer] = []

    async def factory(host: str = "127.0.0.1") -> Peer:
        peer = await open_peer(host)
        made.append(peer)
        return peer

    yield factory
    for peer in made:
        if peer.transport is not None:
            peer.transport.close()


def request_text(
    method: str,
    ruri: str,
    port: int,
    *,
    branch: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    extra: str = "",
    body: str = "",
    max_forwards: int = 70,
) -> str:
    branch = branch or "z9hG4bK" + secrets.token_hex(6)
    call_id = call_id or secrets.token_hex(8)
    return (
        f"{method} {ruri} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\n"
        f"From: <sip:alice@sipmesh.test>;tag=a1\n"
        f"To: <sip:bob@sipmesh.test>\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {method}\n"
        f"Max-Forwards: {max_forwards}\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>\n"
        f"{extra}"
        f"Content-Length: {len(body)}\n\n{body}"
    )


def relay_to(*ports: int, **relay: Any) -> router_pb2.Decision:
    targets = [router_pb2.Target(uri=f"sip:bob@127.0.0.1:{p}") for p in ports]
    return router_pb2.Decision(relay=router_pb2.Relay(targets=targets, **relay))
