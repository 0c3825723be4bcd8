"""The typed interfaces services use to call each other.

Decision: the Protocols take and return the generated protobuf messages of
proto/sipmesh/v1 rather than a parallel set of dataclasses. The contract is then
written once (in the .proto), the gRPC path needs no conversion layer, and the
in-process path (`--target all`) passes the very same objects by reference with no
serialisation. Messages are plain data: a caller must not keep mutating a request
after handing it over.

Every method takes a keyword `timeout` (seconds; None = the client's default). A
gRPC implementation turns it into the per-item deadline on the stream; an
in-process service should bound its work by it (the gRPC adapter does so with
`asyncio.timeout`). Errors are the classes of `sipmesh.clients.errors`, raised the
same way in both modes (Unavailable, DeadlineExceeded, InvalidArgument, ...).

In-process, the service object itself implements its Protocol; split, the
`Grpc*Client` classes of grpc_clients.py do, and grpc_servers.py exposes a service
object as the gRPC servicer. Services never import each other: the runtime's module
manager hands each service the implementations it depends on.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sipmesh.gen.sipmesh.v1 import (
    common_pb2,
    edge_pb2,
    media_relay_pb2,
    presence_pb2,
    registrar_pb2,
    router_pb2,
)
from sipmesh.sip.message import Request, Response


@runtime_checkable
class RouterClient(Protocol):
    """edge -> router: request_route / branch_route / reply_route / failure_route."""

    async def route(
        self, request: router_pb2.RouteRequest, *, timeout: float | None = None
    ) -> router_pb2.Decision: ...


@runtime_checkable
class LocalRouter(Protocol):
    """In one process only: the router takes the request its caller already parsed.

    The optional side channel of the in-process path: the edge hands over its parsed
    ``Request`` next to the RouteRequest (whose ``message.raw`` holds the same bytes)
    and the router works on a copy instead of parsing the bytes again. The gRPC
    client does not implement it; callers fall back to ``RouterClient.route``. The
    caller must not edit ``parsed`` while the call runs.
    """

    async def route_parsed(
        self,
        request: router_pb2.RouteRequest,
        parsed: Request,
        *,
        timeout: float | None = None,
    ) -> tuple[router_pb2.Decision, Response | None]:
        """The decision, and when it is a raw reply built in this process (the
        registrar's 200 OK) that reply as a ``Response``: same bytes as
        ``decision.reply.raw``, so the caller need not parse them."""
        ...


@runtime_checkable
class LocalRegistrar(Protocol):
    """In one process only: register() with the REGISTER its caller already parsed.

    Returns the reply and the registrar's response as a ``Response`` object, so the
    caller can hand it on without parsing ``reply.response.raw`` (same bytes).
    """

    async def register_parsed(
        self,
        request: registrar_pb2.RegisterRequest,
        parsed: Request,
        *,
        timeout: float | None = None,
    ) -> tuple[registrar_pb2.RegisterReply, Response]: ...


@runtime_checkable
class RegistrarClient(Protocol):
    """router/edge -> registrar: save, auth, lookup (hot path) and location admin."""

    async def register(
        self, request: registrar_pb2.RegisterRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RegisterReply: ...

    async def authenticate(
        self, request: registrar_pb2.AuthenticateRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AuthenticateReply: ...

    async def lookup(
        self, request: registrar_pb2.LookupRequest, *, timeout: float | None = None
    ) -> registrar_pb2.LookupReply: ...

    async def is_registered(
        self, request: registrar_pb2.IsRegisteredRequest, *, timeout: float | None = None
    ) -> registrar_pb2.IsRegisteredReply: ...

    async def show_location(
        self, request: registrar_pb2.ShowLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.ShowLocationReply: ...

    async def remove_location(
        self, request: registrar_pb2.RemoveLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RemoveLocationReply: ...

    async def add_location(
        self, request: registrar_pb2.AddLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AddLocationReply: ...


@runtime_checkable
class PresenceClient(Protocol):
    """router -> presence: PUBLISH / SUBSCRIBE / MESSAGE, and events in."""

    async def handle(
        self, request: presence_pb2.HandleRequest, *, timeout: float | None = None
    ) -> presence_pb2.HandleReply: ...

    async def deliver(
        self, request: presence_pb2.DeliverRequest, *, timeout: float | None = None
    ) -> presence_pb2.DeliverReply: ...


@runtime_checkable
class MediaRelayClient(Protocol):
    """router/edge -> media relay (rtpengine's ng commands).

    A session lives on one relay instance: the gRPC client picks the instance by a
    consistent hash of the Call-ID, so offer, answer and delete meet again.
    """

    async def offer(
        self, request: media_relay_pb2.OfferRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply: ...

    async def answer(
        self, request: media_relay_pb2.AnswerRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply: ...

    async def delete(
        self, request: media_relay_pb2.DeleteRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.DeleteReply: ...

    async def query(
        self, request: media_relay_pb2.QueryRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.QueryReply: ...

    async def list_sessions(
        self, request: media_relay_pb2.ListSessionsRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.ListSessionsReply: ...

    async def ping(
        self, request: media_relay_pb2.RelayPingRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.RelayPingReply: ...


@runtime_checkable
class EdgeClient(Protocol):
    """anyone -> edge: send a request through the flow an edge instance owns.

    The gRPC client sends to the instance named by `request.edge_id` (any edge when
    empty); in-process there is one edge and it sends itself.
    """

    async def send(
        self, request: common_pb2.OutboundRequest, *, timeout: float | None = None
    ) -> edge_pb2.SendResult: ...

    async def info(
        self, request: edge_pb2.EdgeInfoRequest, *, timeout: float | None = None
    ) -> edge_pb2.EdgeInfo: ...


class EdgeDirectory(Protocol):
    """Where an edge instance's gRPC API listens (the runtime's instance registry)."""

    async def address_of(self, edge_id: str) -> str:
        """`host:port` of that edge's gRPC server; raises LookupError if unknown."""
        ...
