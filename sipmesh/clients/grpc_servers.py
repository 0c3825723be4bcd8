"""Expose a service object that implements its client Protocol as a gRPC servicer.

A service implements its Protocol once (interfaces.py); in-process callers await
it directly, and these adapters serve it over gRPC when services are split. They
carry the per-item deadline into the `timeout` argument, the trace context into
the handler's context, and raised `ServiceError`s back as CallError / gRPC status.

A service registers itself with the process's gRPC server through the runtime:

    runtime.grpc_registrations.append(partial(add_router_servicer, service=self))

(`add_*_servicer(server, service)` may also be called directly on a grpc.aio server.)
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from sipmesh.clients.errors import InvalidArgument, ServiceError
from sipmesh.clients.interfaces import (
    EdgeClient,
    MediaRelayClient,
    PresenceClient,
    RegistrarClient,
    RouterClient,
)
from sipmesh.clients.specs import EDGE_STREAM, PRESENCE_STREAM, REGISTRAR_STREAM, ROUTER_STREAM
from sipmesh.clients.stream import serve_batch_stream
from sipmesh.clients.tracing import attached, metadata_to_carrier
from sipmesh.gen.sipmesh.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    edge_pb2,
    edge_pb2_grpc,
    media_relay_pb2,
    media_relay_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    registrar_pb2,
    registrar_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENCY = 1024

UnaryImpl = Callable[..., Awaitable[Any]]


def _item_timeout(deadline_ms: int) -> float | None:
    return deadline_ms / 1000 if deadline_ms else None


async def _serve_unary(impl: UnaryImpl, request: Any, context: Any, name: str) -> Any:
    """Call `impl(request, timeout=...)` for a unary RPC, mapping errors to statuses."""
    carrier = metadata_to_carrier(context.invocation_metadata())
    try:
        with attached(carrier):
            return await impl(request, timeout=context.time_remaining())
    except ServiceError as exc:
        await context.abort(exc.status, exc.message)
    except TimeoutError:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    except Exception as exc:
        log.exception("%s failed", name)
        await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    return None  # not reached: abort raises


class CallGuard(Protocol):
    """Decides whether a unary call may run (the admin API's tokens)."""

    def admit(
        self, rpc: str, metadata: Sequence[tuple[str, str | bytes]], peer: str
    ) -> contextlib.AbstractContextManager[None]:
        """Raise a ServiceError (Unauthenticated, PermissionDenied) to refuse the
        call, else return the context it runs in (e.g. naming the caller)."""
        ...


def _unary(
    impl: UnaryImpl, name: str, guard: CallGuard | None = None
) -> Callable[[Any, Any, Any], Awaitable[Any]]:
    """A servicer method (for a generated class) serving `impl`, behind `guard`."""

    async def method(_self: Any, request: Any, context: Any) -> Any:
        if guard is None:
            return await _serve_unary(impl, request, context, name)
        try:
            admitted = guard.admit(name, context.invocation_metadata() or (), context.peer())
        except ServiceError as exc:
            await context.abort(exc.status, exc.message)
            return None  # not reached: abort raises
        with admitted:
            return await _serve_unary(impl, request, context, name)

    method.__name__ = name
    return method


# -- router ---------------------------------------------------------------------------


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, service: RouterClient, max_concurrency: int) -> None:
        self._service = service
        self._max = max_concurrency

    async def _handle(self, item: router_pb2.RouteItem) -> router_pb2.DecisionItem:
        decision = await self._service.route(item.request, timeout=_item_timeout(item.deadline_ms))
        return router_pb2.DecisionItem(decision=decision)

    async def Route(
        self, request_iterator: AsyncIterator[router_pb2.RouteBatch], context: Any
    ) -> AsyncIterator[router_pb2.DecisionBatch]:
        async for batch in serve_batch_stream(
            request_iterator, self._handle, ROUTER_STREAM, self._max
        ):
            yield batch


def add_router_servicer(
    server: grpc.aio.Server,
    service: RouterClient,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> None:
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(service, max_concurrency), server)


# -- registrar --------------------------------------------------------------------------


class RegistrarServicer(registrar_pb2_grpc.RegistrarServicer):
    def __init__(self, service: RegistrarClient, max_concurrency: int) -> None:
        self._service = service
        self._max = max_concurrency

    async def _handle(self, item: registrar_pb2.RegistrarItem) -> registrar_pb2.RegistrarReplyItem:
        timeout = _item_timeout(item.deadline_ms)
        kind = item.WhichOneof("call")
        service = self._service
        if kind == "register":
            return registrar_pb2.RegistrarReplyItem(
                register=await service.register(item.register, timeout=timeout)
            )
        if kind == "authenticate":
            return registrar_pb2.RegistrarReplyItem(
                authenticate=await service.authenticate(item.authenticate, timeout=timeout)
            )
        if kind == "lookup":
            return registrar_pb2.RegistrarReplyItem(
                lookup=await service.lookup(item.lookup, timeout=timeout)
            )
        if kind == "is_registered":
            return registrar_pb2.RegistrarReplyItem(
                is_registered=await service.is_registered(item.is_registered, timeout=timeout)
            )
        raise InvalidArgument(f"unknown registrar call {kind!r}")

    async def Call(
        self, request_iterator: AsyncIterator[registrar_pb2.RegistrarBatch], context: Any
    ) -> AsyncIterator[registrar_pb2.RegistrarReplyBatch]:
        async for batch in serve_batch_stream(
            request_iterator, self._handle, REGISTRAR_STREAM, self._max
        ):
            yield batch

    async def ShowLocation(
        self, request: registrar_pb2.ShowLocationRequest, context: Any
    ) -> registrar_pb2.ShowLocationReply:
        reply: registrar_pb2.ShowLocationReply = await _serve_unary(
            self._service.show_location, request, context, "ShowLocation"
        )
        return reply

    async def RemoveLocation(
        self, request: registrar_pb2.RemoveLocationRequest, context: Any
    ) -> registrar_pb2.RemoveLocationReply:
        reply: registrar_pb2.RemoveLocationReply = await _serve_unary(
            self._service.remove_location, request, context, "RemoveLocation"
        )
        return reply

    async def AddLocation(
        self, request: registrar_pb2.AddLocationRequest, context: Any
    ) -> registrar_pb2.AddLocationReply:
        reply: registrar_pb2.AddLocationReply = await _serve_unary(
            self._service.add_location, request, context, "AddLocation"
        )
        return reply


def add_registrar_servicer(
    server: grpc.aio.Server,
    service: RegistrarClient,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> None:
    registrar_pb2_grpc.add_RegistrarServicer_to_server(
        RegistrarServicer(service, max_concurrency), server
    )


# -- presence ---------------------------------------------------------------------------


class PresenceServicer(presence_pb2_grpc.PresenceServicer):
    def __init__(self, service: PresenceClient, max_concurrency: int) -> None:
        self._service = service
        self._max = max_concurrency

    async def _handle(self, item: presence_pb2.PresenceItem) -> presence_pb2.PresenceReplyItem:
        reply = await self._service.handle(item.request, timeout=_item_timeout(item.deadline_ms))
        return presence_pb2.PresenceReplyItem(reply=reply)

    async def Handle(
        self, request_iterator: AsyncIterator[presence_pb2.PresenceBatch], context: Any
    ) -> AsyncIterator[presence_pb2.PresenceReplyBatch]:
        async for batch in serve_batch_stream(
            request_iterator, self._handle, PRESENCE_STREAM, self._max
        ):
            yield batch

    async def Deliver(
        self, request: presence_pb2.DeliverRequest, context: Any
    ) -> presence_pb2.DeliverReply:
        reply: presence_pb2.DeliverReply = await _serve_unary(
            self._service.deliver, request, context, "Deliver"
        )
        return reply


def add_presence_servicer(
    server: grpc.aio.Server,
    service: PresenceClient,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> None:
    presence_pb2_grpc.add_PresenceServicer_to_server(
        PresenceServicer(service, max_concurrency), server
    )


# -- edge -------------------------------------------------------------------------------


class EdgeServicer(edge_pb2_grpc.EdgeServicer):
    def __init__(self, service: EdgeClient, max_concurrency: int) -> None:
        self._service = service
        self._max = max_concurrency

    async def _handle(self, item: edge_pb2.SendItem) -> edge_pb2.SendResultItem:
        result = await self._service.send(item.request, timeout=_item_timeout(item.deadline_ms))
        return edge_pb2.SendResultItem(sent=result)

    async def Send(
        self, request_iterator: AsyncIterator[edge_pb2.SendBatch], context: Any
    ) -> AsyncIterator[edge_pb2.SendResultBatch]:
        async for batch in serve_batch_stream(
            request_iterator, self._handle, EDGE_STREAM, self._max
        ):
            yield batch

    async def Info(self, request: edge_pb2.EdgeInfoRequest, context: Any) -> edge_pb2.EdgeInfo:
        reply: edge_pb2.EdgeInfo = await _serve_unary(self._service.info, request, context, "Info")
        return reply


def add_edge_servicer(
    server: grpc.aio.Server, service: EdgeClient, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY
) -> None:
    edge_pb2_grpc.add_EdgeServicer_to_server(EdgeServicer(service, max_concurrency), server)


# -- unary-only services: media relay, admin -------------------------------------------------


def snake_case(rpc_name: str) -> str:
    """`SubscriberAdd` -> `subscriber_add` (the Protocol method of an RPC)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rpc_name).lower()


# MediaRelay.List is `list_sessions` in the Protocol (`list` would shadow the builtin).
_MEDIA_RELAY_NAMES = {"List": "list_sessions"}


def _unary_servicer(
    base: type[Any],
    descriptor: Any,
    service: object,
    renames: dict[str, str],
    guard: CallGuard | None = None,
) -> Any:
    """An instance of the generated servicer `base` whose every RPC calls the
    service's method of the same name in snake_case (all RPCs must be unary),
    each call first admitted by `guard` when there is one."""
    methods: dict[str, Any] = {}
    missing: list[str] = []
    for rpc in descriptor.methods:
        attribute = renames.get(rpc.name, snake_case(rpc.name))
        impl = getattr(service, attribute, None)
        if impl is None:
            missing.append(attribute)
            continue
        methods[rpc.name] = _unary(impl, rpc.name, guard)
    if missing:
        raise TypeError(
            f"{type(service).__name__} lacks {descriptor.full_name} methods: {', '.join(missing)}"
        )
    cls = type(f"{descriptor.name}Adapter", (base,), methods)
    return cls()


def add_media_relay_servicer(server: grpc.aio.Server, service: MediaRelayClient) -> None:
    servicer = _unary_servicer(
        media_relay_pb2_grpc.MediaRelayServicer,
        media_relay_pb2.DESCRIPTOR.services_by_name["MediaRelay"],
        service,
        _MEDIA_RELAY_NAMES,
    )
    media_relay_pb2_grpc.add_MediaRelayServicer_to_server(servicer, server)


def add_admin_servicer(server: grpc.aio.Server, service: object, *, guard: CallGuard) -> None:
    """Serve an object implementing `sipmesh.clients.admin_api.AdminApi`, every call
    admitted by `guard` first (the admin tokens, sipmesh/clients/admin_auth.py).

    The guard sits in the Admin servicer, not in a server interceptor, so the other
    services on the same port (router, registrar, edge streams…) never pay for it.
    Raises TypeError naming the missing methods when it does not implement all.
    """
    servicer = _unary_servicer(
        admin_pb2_grpc.AdminServicer,
        admin_pb2.DESCRIPTOR.services_by_name["Admin"],
        service,
        {},
        guard,
    )
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
