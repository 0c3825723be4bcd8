"""AdminApi covers sipmesh.v1.Admin exactly; the generic adapter serves it over gRPC."""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from sipmesh.clients.admin_api import AdminApi, GrpcAdminClient
from sipmesh.clients.admin_auth import Tokens, bearer_token
from sipmesh.clients.errors import AlreadyExists, InvalidArgument, Unauthenticated
from sipmesh.clients.grpc_servers import add_admin_servicer, snake_case
from sipmesh.gen.sipmesh.v1 import admin_pb2

pytestmark = pytest.mark.timeout(60)

ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
TOKEN = "t0ken"


@dataclass
class TokenCheck:
    """A CallGuard admitting callers with TOKEN (the admin service's is auth.py's)."""

    admitted: list[str] = field(default_factory=list)

    def admit(
        self, rpc: str, metadata: Sequence[tuple[str, str | bytes]], peer: str
    ) -> contextlib.AbstractContextManager[None]:
        Tokens(write=TOKEN).admit(rpc, bearer_token(metadata))
        self.admitted.append(rpc)
        return contextlib.nullcontext()


def test_admin_api_matches_the_proto() -> None:
    for rpc in ADMIN.methods:
        name = snake_case(rpc.name)
        hints = typing.get_type_hints(getattr(AdminApi, name))
        assert hints["request"] is message_factory.GetMessageClass(rpc.input_type), name
        assert hints["return"] is message_factory.GetMessageClass(rpc.output_type), name
        assert callable(getattr(GrpcAdminClient, name)), name
    protocol_methods = {
        name
        for name in vars(AdminApi)
        if not name.startswith("_") and callable(vars(AdminApi)[name])
    }
    assert protocol_methods == {snake_case(rpc.name) for rpc in ADMIN.methods}


class Partial:
    async def ping(
        self, request: admin_pb2.PingAdminRequest, *, timeout: float | None = None
    ) -> admin_pb2.PongAdminReply:
        return admin_pb2.PongAdminReply()


async def test_adapter_refuses_an_incomplete_service() -> None:
    # Async: grpc.aio.server() needs a running loop (a sync test would make one with
    # get_event_loop(), which fails after any asyncio.run in the same process).
    server = grpc.aio.server()
    with pytest.raises(TypeError, match="subscriber_add"):
        add_admin_servicer(server, Partial(), guard=TokenCheck())


@dataclass
class MemoryAdmin:
    """Subscribers in a dict; every other operation answers its empty reply."""

    subscribers: dict[tuple[str, str], admin_pb2.Subscriber] = field(default_factory=dict)
    timeouts: list[float | None] = field(default_factory=list)

    async def subscriber_add(
        self, request: admin_pb2.SubscriberAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber:
        self.timeouts.append(timeout)
        if not request.password:
            raise InvalidArgument("password is required")
        key = (request.username, request.domain)
        if key in self.subscribers:
            raise AlreadyExists(f"{request.username}@{request.domain} exists")
        subscriber = admin_pb2.Subscriber(
            id=len(self.subscribers) + 1, username=request.username, domain=request.domain
        )
        self.subscribers[key] = subscriber
        return subscriber

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        rpc = next((r for r in ADMIN.methods if snake_case(r.name) == name), None)
        if rpc is None:
            raise AttributeError(name)
        reply_class = message_factory.GetMessageClass(rpc.output_type)

        async def operation(request: Any, *, timeout: float | None = None) -> Any:
            return reply_class()

        return operation


async def test_admin_round_trip_with_status_codes() -> None:
    service = MemoryAdmin()
    server = grpc.aio.server()
    guard = TokenCheck()
    add_admin_servicer(server, service, guard=guard)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GrpcAdminClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            request = admin_pb2.SubscriberAddRequest(
                username="alice", domain="example.com", password="secret"
            )
            added = await client.subscriber_add(request, timeout=3)
            assert (added.id, added.username) == (1, "alice")
            with pytest.raises(AlreadyExists, match=r"alice@example\.com exists"):
                await client.subscriber_add(request)
            with pytest.raises(InvalidArgument, match="password"):
                await client.subscriber_add(
                    admin_pb2.SubscriberAddRequest(username="bob", domain="example.com")
                )
            stats = await client.stats(admin_pb2.StatsRequest(group="core"))
            assert isinstance(stats, admin_pb2.StatsReply)
            # The caller's deadline reached the service as its timeout.
            first = service.timeouts[0]
            assert first is not None
            assert 0 < first <= 3
        # Every call went through the guard; a refused one never reached the service.
        assert guard.admitted == ["SubscriberAdd"] * 3 + ["Stats"]
        calls = len(service.timeouts)
        async with GrpcAdminClient(f"127.0.0.1:{port}", token="other") as stranger:
            with pytest.raises(Unauthenticated):
                await stranger.subscriber_add(admin_pb2.SubscriberAddRequest(), timeout=3)
        assert len(service.timeouts) == calls
    finally:
        await server.stop(0)
