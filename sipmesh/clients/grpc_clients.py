"""gRPC implementations of the client Protocols of interfaces.py (split mode).

Hot-path calls (router, registrar save/auth/lookup, presence, edge send) go over
the batched streams of stream.py; administrative and media-relay calls are unary,
on channels with gRPC's round_robin policy over every resolved address (media
relay: one channel per relay, chosen by a consistent hash of the Call-ID).

Every client has `start()` and `close()` (the runtime calls them with the service
lifecycle) and can be used as an async context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from sipmesh.clients.backend import BackendStream, StreamOptions, channel_options
from sipmesh.clients.errors import (
    DeadlineExceeded,
    Internal,
    ServiceError,
    Unavailable,
    error_from_status,
)
from sipmesh.clients.interfaces import EdgeDirectory
from sipmesh.clients.resolve import Resolver, channel_target, target_resolver
from sipmesh.clients.specs import (
    EDGE_STREAM,
    PRESENCE_STREAM,
    REGISTRAR_STREAM,
    ROUTER_STREAM,
    EdgeStreamSpec,
)
from sipmesh.clients.stream import BatchingStreamClient
from sipmesh.clients.tracing import trace_metadata
from sipmesh.gen.sipmesh.v1 import (
    common_pb2,
    edge_pb2,
    edge_pb2_grpc,
    media_relay_pb2,
    media_relay_pb2_grpc,
    presence_pb2,
    presence_pb2_grpc,
    registrar_pb2,
    registrar_pb2_grpc,
    router_pb2,
)

log = logging.getLogger(__name__)

Reply = TypeVar("Reply")


def unary_channel(target: str, options: StreamOptions | None = None) -> grpc.aio.Channel:
    """A channel spreading unary calls round-robin over every address of `target`."""
    opts = channel_options(options or StreamOptions())
    opts.append(("grpc.lb_policy_name", "round_robin"))
    return grpc.aio.insecure_channel(channel_target(target), options=opts)


async def unary_call(
    method: Callable[..., Awaitable[Any]],
    request: object,
    reply_type: type[Reply],
    timeout: float,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """One unary call with deadline, trace and extra metadata; errors as ServiceError."""
    try:
        reply = await method(request, timeout=timeout, metadata=trace_metadata() + metadata)
    except grpc.aio.AioRpcError as exc:
        raise error_from_status(exc.code(), exc.details()) from None
    if not isinstance(reply, reply_type):
        raise Internal(f"expected {reply_type.__name__}, got {type(reply).__name__}")
    return reply


def _unexpected(kind: str | None, wanted: str) -> ServiceError:
    return Internal(f"answer of kind {kind!r} where {wanted!r} was expected")


class GrpcRouterClient:
    """RouterClient over the batched Router.Route stream."""

    def __init__(
        self, target: str, options: StreamOptions | None = None, *, resolver: Resolver | None = None
    ) -> None:
        self.stream = BatchingStreamClient(target, ROUTER_STREAM, options, resolver=resolver)

    async def start(self) -> None:
        await self.stream.start()

    async def close(self) -> None:
        await self.stream.close()

    async def __aenter__(self) -> GrpcRouterClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def route(
        self, request: router_pb2.RouteRequest, *, timeout: float | None = None
    ) -> router_pb2.Decision:
        reply = await self.stream.call(router_pb2.RouteItem(request=request), timeout)
        if reply.WhichOneof("result") != "decision":
            raise _unexpected(reply.WhichOneof("result"), "decision")
        return reply.decision


class GrpcRegistrarClient:
    """RegistrarClient: save/auth/lookup on the batched stream, location admin unary."""

    def __init__(
        self, target: str, options: StreamOptions | None = None, *, resolver: Resolver | None = None
    ) -> None:
        self._options = options or StreamOptions()
        self.stream = BatchingStreamClient(target, REGISTRAR_STREAM, options, resolver=resolver)
        self._target = target
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def start(self) -> None:
        await self.stream.start()
        self._channel = unary_channel(self._target, self._options)
        self._stub = registrar_pb2_grpc.RegistrarStub(self._channel)

    async def close(self) -> None:
        await self.stream.close()
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> GrpcRegistrarClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self, item: registrar_pb2.RegistrarItem, timeout: float | None, kind: str
    ) -> registrar_pb2.RegistrarReplyItem:
        reply = await self.stream.call(item, timeout)
        if reply.WhichOneof("result") != kind:
            raise _unexpected(reply.WhichOneof("result"), kind)
        return reply

    async def register(
        self, request: registrar_pb2.RegisterRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RegisterReply:
        item = registrar_pb2.RegistrarItem(register=request)
        return (await self._call(item, timeout, "register")).register

    async def authenticate(
        self, request: registrar_pb2.AuthenticateRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AuthenticateReply:
        item = registrar_pb2.RegistrarItem(authenticate=request)
        return (await self._call(item, timeout, "authenticate")).authenticate

    async def lookup(
        self, request: registrar_pb2.LookupRequest, *, timeout: float | None = None
    ) -> registrar_pb2.LookupReply:
        item = registrar_pb2.RegistrarItem(lookup=request)
        return (await self._call(item, timeout, "lookup")).lookup

    async def is_registered(
        self, request: registrar_pb2.IsRegisteredRequest, *, timeout: float | None = None
    ) -> registrar_pb2.IsRegisteredReply:
        item = registrar_pb2.RegistrarItem(is_registered=request)
        return (await self._call(item, timeout, "is_registered")).is_registered

    def _timeout(self, timeout: float | None) -> float:
        return self._options.default_timeout if timeout is None else timeout

    async def show_location(
        self, request: registrar_pb2.ShowLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.ShowLocationReply:
        return await unary_call(
            self._stub.ShowLocation,
            request,
            registrar_pb2.ShowLocationReply,
            self._timeout(timeout),
        )

    async def remove_location(
        self, request: registrar_pb2.RemoveLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RemoveLocationReply:
        return await unary_call(
            self._stub.RemoveLocation,
            request,
            registrar_pb2.RemoveLocationReply,
            self._timeout(timeout),
        )

    async def add_location(
        self, request: registrar_pb2.AddLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AddLocationReply:
        return await unary_call(
            self._stub.AddLocation, request, registrar_pb2.AddLocationReply, self._timeout(timeout)
        )


class GrpcPresenceClient:
    """PresenceClient: Handle on the batched stream, Deliver unary."""

    def __init__(
        self, target: str, options: StreamOptions | None = None, *, resolver: Resolver | None = None
    ) -> None:
        self._options = options or StreamOptions()
        self.stream = BatchingStreamClient(target, PRESENCE_STREAM, options, resolver=resolver)
        self._target = target
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def start(self) -> None:
        await self.stream.start()
        self._channel = unary_channel(self._target, self._options)
        self._stub = presence_pb2_grpc.PresenceStub(self._channel)

    async def close(self) -> None:
        await self.stream.close()
        if self._channel is not None:
            await self._channel.close()

    async def handle(
        self, request: presence_pb2.HandleRequest, *, timeout: float | None = None
    ) -> presence_pb2.HandleReply:
        reply = await self.stream.call(presence_pb2.PresenceItem(request=request), timeout)
        if reply.WhichOneof("result") != "reply":
            raise _unexpected(reply.WhichOneof("result"), "reply")
        return reply.reply

    async def deliver(
        self, request: presence_pb2.DeliverRequest, *, timeout: float | None = None
    ) -> presence_pb2.DeliverReply:
        wait = self._options.default_timeout if timeout is None else timeout
        return await unary_call(self._stub.Deliver, request, presence_pb2.DeliverReply, wait)


def _rendezvous_score(key: str, address: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{address}".encode(), digest_size=8).digest()


class GrpcMediaRelayClient:
    """MediaRelayClient: unary calls to the relay owning the session.

    Relays are chosen by rendezvous (highest-random-weight) hashing of the Call-ID
    over the resolved addresses, so offer, answer, query and delete of one call
    reach the same relay, and losing one relay only moves that relay's calls. A
    relay that fails with Unavailable/DeadlineExceeded is skipped for `cooldown`
    seconds (issue 10: a relay that stops answering is skipped).
    """

    def __init__(
        self,
        target: str,
        options: StreamOptions | None = None,
        *,
        resolver: Resolver | None = None,
        cooldown: float = 5.0,
    ) -> None:
        self._options = options or StreamOptions()
        self._resolve = resolver or target_resolver(target)
        self._cooldown = cooldown
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Any] = {}
        self._down_until: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._resolve_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels.clear()
        self._stubs.clear()

    async def refresh(self) -> None:
        addresses = await self._resolve()
        for address in addresses:
            if address not in self._channels:
                channel = grpc.aio.insecure_channel(address, options=channel_options(self._options))
                self._channels[address] = channel
                self._stubs[address] = media_relay_pb2_grpc.MediaRelayStub(channel)
        for address in list(self._channels):
            if address not in addresses:
                self._stubs.pop(address)
                self._down_until.pop(address, None)
                await self._channels.pop(address).close()

    async def _resolve_loop(self) -> None:
        while True:
            await asyncio.sleep(self._options.resolve_interval)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("re-resolving media relays failed: %s", exc)

    def relay_for(self, call_id: str) -> str:
        """The address of the relay that owns `call_id` now."""
        if not self._stubs:
            raise Unavailable("no media relay resolved")
        now = asyncio.get_running_loop().time()
        healthy = [a for a in self._stubs if self._down_until.get(a, 0.0) <= now]
        return max(healthy or list(self._stubs), key=lambda a: _rendezvous_score(call_id, a))

    async def _call(
        self,
        name: str,
        call_id: str,
        request: object,
        reply_type: type[Reply],
        timeout: float | None,
    ) -> Reply:
        address = self.relay_for(call_id)
        wait = self._options.default_timeout if timeout is None else timeout
        try:
            return await unary_call(getattr(self._stubs[address], name), request, reply_type, wait)
        except (Unavailable, DeadlineExceeded):
            self._down_until[address] = asyncio.get_running_loop().time() + self._cooldown
            raise

    async def offer(
        self, request: media_relay_pb2.OfferRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        return await self._call(
            "Offer", request.key.call_id, request, media_relay_pb2.SdpReply, timeout
        )

    async def answer(
        self, request: media_relay_pb2.AnswerRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        return await self._call(
            "Answer", request.key.call_id, request, media_relay_pb2.SdpReply, timeout
        )

    async def delete(
        self, request: media_relay_pb2.DeleteRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.DeleteReply:
        return await self._call(
            "Delete", request.key.call_id, request, media_relay_pb2.DeleteReply, timeout
        )

    async def query(
        self, request: media_relay_pb2.QueryRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.QueryReply:
        return await self._call(
            "Query", request.key.call_id, request, media_relay_pb2.QueryReply, timeout
        )

    async def list_sessions(
        self, request: media_relay_pb2.ListSessionsRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.ListSessionsReply:
        """The sessions of every relay, merged (a relay that fails is left out)."""
        wait = self._options.default_timeout if timeout is None else timeout
        replies = await asyncio.gather(
            *(
                unary_call(stub.List, request, media_relay_pb2.ListSessionsReply, wait)
                for stub in self._stubs.values()
            ),
            return_exceptions=True,
        )
        merged = media_relay_pb2.ListSessionsReply()
        for reply in replies:
            if isinstance(reply, media_relay_pb2.ListSessionsReply):
                merged.sessions.extend(reply.sessions)
                merged.total += reply.total
        return merged

    async def ping(
        self, request: media_relay_pb2.RelayPingRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.RelayPingReply:
        return await self._call("Ping", "", request, media_relay_pb2.RelayPingReply, timeout)


class GrpcEdgeClient:
    """EdgeClient: Send over a batched stream to the edge instance owning the flow.

    `request.edge_id` names the instance; `directory` maps it to its gRPC address
    (one stream per edge instance, opened on first use). Requests without an edge
    id go round-robin over `any_target` when given.
    """

    def __init__(
        self,
        directory: EdgeDirectory,
        any_target: str | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        self._directory = directory
        self._options = options or StreamOptions()
        self._spec: EdgeStreamSpec = EDGE_STREAM
        self._streams: dict[
            str,
            BackendStream[
                edge_pb2.SendItem,
                edge_pb2.SendResultItem,
                edge_pb2.SendBatch,
                edge_pb2.SendResultBatch,
            ],
        ] = {}
        self._any = (
            BatchingStreamClient(any_target, EDGE_STREAM, self._options) if any_target else None
        )

    async def start(self) -> None:
        if self._any is not None:
            await self._any.start()

    async def close(self) -> None:
        if self._any is not None:
            await self._any.close()
        streams = list(self._streams.values())
        self._streams.clear()
        await asyncio.gather(*(stream.close() for stream in streams))

    async def _address(self, edge_id: str) -> str:
        try:
            return await self._directory.address_of(edge_id)
        except LookupError:
            raise Unavailable(f"edge {edge_id!r} is not known (gone?)") from None

    def _stream(
        self, address: str
    ) -> BackendStream[
        edge_pb2.SendItem, edge_pb2.SendResultItem, edge_pb2.SendBatch, edge_pb2.SendResultBatch
    ]:
        stream = self._streams.get(address)
        if stream is None:
            stream = BackendStream(address, self._spec, self._options)
            self._streams[address] = stream
            stream.start()
        return stream

    async def send(
        self, request: common_pb2.OutboundRequest, *, timeout: float | None = None
    ) -> edge_pb2.SendResult:
        wait = self._options.default_timeout if timeout is None else timeout
        item = edge_pb2.SendItem(request=request)
        if request.edge_id:
            reply = await self._stream(await self._address(request.edge_id)).call(item, wait)
        elif self._any is not None:
            reply = await self._any.call(item, wait)
        else:
            raise Unavailable("no edge named and no edge target configured")
        if reply.WhichOneof("result") != "sent":
            raise _unexpected(reply.WhichOneof("result"), "sent")
        return reply.sent

    async def info(
        self, request: edge_pb2.EdgeInfoRequest, *, timeout: float | None = None
    ) -> edge_pb2.EdgeInfo:
        wait = self._options.default_timeout if timeout is None else timeout
        if not request.edge_id:
            raise Unavailable("EdgeInfoRequest.edge_id is required over gRPC")
        address = await self._address(request.edge_id)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = edge_pb2_grpc.EdgeStub(channel)
            return await unary_call(stub.Info, request, edge_pb2.EdgeInfo, wait)
