"""Real gRPC servers on 127.0.0.1 ephemeral ports serving test implementations of the
client Protocols (no mocks: the stream machinery runs end to end over loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from sipmesh.clients.errors import InvalidArgument
from sipmesh.clients.grpc_servers import RouterServicer
from sipmesh.gen.sipmesh.v1 import router_pb2, router_pb2_grpc


@dataclass
class EchoRouter:
    """A RouterClient: answers `200 <name>:<transaction_id>` after an optional delay.

    `transaction_id` "sleep:S:tag" sleeps S seconds first; handler "invalid" raises
    InvalidArgument.
    """

    name: str
    calls: int = 0
    cancelled: int = 0
    trace_ids: list[int] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_event: asyncio.Event = field(default_factory=asyncio.Event)

    async def route(
        self, request: router_pb2.RouteRequest, *, timeout: float | None = None
    ) -> router_pb2.Decision:
        self.calls += 1
        self.started.set()
        self.trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        if request.handler == "invalid":
            raise InvalidArgument("no such handler")
        parts = request.transaction_id.split(":")
        if parts[0] == "sleep":
            try:
                await asyncio.sleep(float(parts[1]))
            except asyncio.CancelledError:
                self.cancelled += 1
                self.cancelled_event.set()
                raise
        reply = router_pb2.Reply(code=200, reason=f"{self.name}:{request.transaction_id}")
        return router_pb2.Decision(reply=reply)


class CountingRouterServicer(RouterServicer):
    """The real adapter, recording the size of every batch it receives."""

    def __init__(self, service: EchoRouter) -> None:
        super().__init__(service, max_concurrency=1024)
        self.batches: list[int] = []

    async def Route(
        self, request_iterator: AsyncIterator[router_pb2.RouteBatch], context: Any
    ) -> AsyncIterator[router_pb2.DecisionBatch]:
        async def counted() -> AsyncIterator[router_pb2.RouteBatch]:
            async for batch in request_iterator:
                self.batches.append(len(batch.items))
                yield batch

        async for reply in super().Route(counted(), context):
            yield reply


@dataclass
class RunningRouter:
    server: grpc.aio.Server
    service: EchoRouter
    servicer: CountingRouterServicer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(0)


StartRouter = Callable[..., Awaitable[RunningRouter]]


@pytest.fixture
async def start_router() -> AsyncIterator[StartRouter]:
    """Start an EchoRouter gRPC server (port 0 = ephemeral, or a given port)."""
    running: list[RunningRouter] = []

    async def start(name: str = "r1", port: int = 0) -> RunningRouter:
        service = EchoRouter(name)
        servicer = CountingRouterServicer(service)
        server = grpc.aio.server()
        router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        assert bound != 0
        await server.start()
        item = RunningRouter(server, service, servicer, bound)
        running.append(item)
        return item

    yield start
    for item in running:
        await item.server.stop(0)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until `predicate()` holds; fails the test otherwise."""
    async with asyncio.timeout(timeout):
        for _ in range(1_000_000):
            if predicate():
                return
            await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    return eventually
