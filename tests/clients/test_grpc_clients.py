"""The Grpc*Client classes against real gRPC servers built by grpc_servers.py.

Each test service below is a small in-memory implementation of its Protocol, served
with the same adapter a real service uses, so both halves of the plumbing run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from sipmesh.clients.backend import StreamOptions
from sipmesh.clients.errors import InvalidArgument, NotFound, Unavailable
from sipmesh.clients.grpc_clients import (
    GrpcEdgeClient,
    GrpcMediaRelayClient,
    GrpcPresenceClient,
    GrpcRegistrarClient,
    GrpcRouterClient,
)
from sipmesh.clients.grpc_servers import (
    add_edge_servicer,
    add_media_relay_servicer,
    add_presence_servicer,
    add_registrar_servicer,
)
from sipmesh.clients.interfaces import (
    EdgeClient,
    MediaRelayClient,
    PresenceClient,
    RegistrarClient,
    RouterClient,
)
from sipmesh.gen.sipmesh.v1 import (
    common_pb2,
    edge_pb2,
    media_relay_pb2,
    presence_pb2,
    registrar_pb2,
)

pytestmark = pytest.mark.timeout(60)

FAST = StreamOptions(
    default_timeout=5.0, connect_timeout=1.0, backoff_initial=0.02, backoff_max=0.2
)


@pytest.fixture
async def serve() -> AsyncIterator[
    Callable[[Callable[[grpc.aio.Server], None]], Awaitable[tuple[grpc.aio.Server, str]]]
]:
    servers: list[grpc.aio.Server] = []

    async def start(register: Callable[[grpc.aio.Server], None]) -> tuple[grpc.aio.Server, str]:
        server = grpc.aio.server()
        register(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


# -- registrar -----------------------------------------------------------------------------


@dataclass
class MemoryRegistrar:
    """RegistrarClient keeping bindings in a dict (AOR = authenticated user)."""

    bindings: dict[str, list[common_pb2.Binding]] = field(default_factory=dict)

    async def register(
        self, request: registrar_pb2.RegisterRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RegisterReply:
        aor = request.authenticated_user
        binding = common_pb2.Binding(
            aor=aor,
            contact=request.message.raw.decode(),
            edge_id=request.message.source.edge_id,
        )
        self.bindings.setdefault(aor, []).append(binding)
        response = registrar_pb2.SipResponse(code=200, reason="OK", raw=b"SIP/2.0 200 OK\r\n\r\n")
        return registrar_pb2.RegisterReply(response=response, bindings=self.bindings[aor], aor=aor)

    async def authenticate(
        self, request: registrar_pb2.AuthenticateRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AuthenticateReply:
        if not request.realm:
            raise InvalidArgument("realm required")
        return registrar_pb2.AuthenticateReply(
            result=registrar_pb2.AuthenticateReply.RESULT_CHALLENGE,
            response=registrar_pb2.SipResponse(code=401, reason="Unauthorized"),
        )

    async def lookup(
        self, request: registrar_pb2.LookupRequest, *, timeout: float | None = None
    ) -> registrar_pb2.LookupReply:
        found = self.bindings.get(request.aor, [])
        result = (
            registrar_pb2.LookupReply.RESULT_FOUND
            if found
            else registrar_pb2.LookupReply.RESULT_NOT_FOUND
        )
        return registrar_pb2.LookupReply(result=result, bindings=found, aor=request.aor)

    async def is_registered(
        self, request: registrar_pb2.IsRegisteredRequest, *, timeout: float | None = None
    ) -> registrar_pb2.IsRegisteredReply:
        return registrar_pb2.IsRegisteredReply(registered=bool(self.bindings.get(request.aor)))

    async def show_location(
        self, request: registrar_pb2.ShowLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.ShowLocationReply:
        every = [b for aor in sorted(self.bindings) for b in self.bindings[aor]]
        chosen = [b for b in every if not request.aor or b.aor == request.aor]
        return registrar_pb2.ShowLocationReply(bindings=chosen)

    async def remove_location(
        self, request: registrar_pb2.RemoveLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.RemoveLocationReply:
        if request.aor not in self.bindings:
            raise NotFound(f"no AOR {request.aor}")
        return registrar_pb2.RemoveLocationReply(removed=len(self.bindings.pop(request.aor)))

    async def add_location(
        self, request: registrar_pb2.AddLocationRequest, *, timeout: float | None = None
    ) -> registrar_pb2.AddLocationReply:
        self.bindings.setdefault(request.binding.aor, []).append(request.binding)
        return registrar_pb2.AddLocationReply(binding=request.binding)


def test_implementations_satisfy_the_protocols() -> None:
    # In-process the service object is the client; split, the gRPC class is.
    assert isinstance(MemoryRegistrar(), RegistrarClient)
    assert isinstance(GrpcRegistrarClient("127.0.0.1:1"), RegistrarClient)
    assert isinstance(GrpcRouterClient("127.0.0.1:1"), RouterClient)
    assert isinstance(GrpcPresenceClient("127.0.0.1:1"), PresenceClient)
    assert isinstance(GrpcMediaRelayClient("127.0.0.1:1"), MediaRelayClient)
    assert isinstance(GrpcEdgeClient(Directory({})), EdgeClient)


async def test_registrar_stream_and_unary_calls(
    serve: Callable[..., Awaitable[tuple[grpc.aio.Server, str]]],
) -> None:
    service = MemoryRegistrar()
    _, address = await serve(lambda server: add_registrar_servicer(server, service))
    client: RegistrarClient
    async with GrpcRegistrarClient(address, FAST) as grpc_client:
        client = grpc_client
        message = common_pb2.SipMessage(
            raw=b"sip:alice@192.0.2.10", source=common_pb2.Source(edge_id="edge-1")
        )
        replies = await asyncio.gather(
            client.register(
                registrar_pb2.RegisterRequest(
                    message=message, authenticated_user="alice@example.com"
                )
            ),
            client.is_registered(registrar_pb2.IsRegisteredRequest(aor="bob@example.com")),
        )
        assert replies[0].response.code == 200
        assert replies[0].bindings[0].edge_id == "edge-1"
        assert replies[1].registered is False
        found = await client.lookup(registrar_pb2.LookupRequest(aor="alice@example.com"))
        assert found.result == registrar_pb2.LookupReply.RESULT_FOUND
        assert [b.contact for b in found.bindings] == ["sip:alice@192.0.2.10"]
        challenge = await client.authenticate(
            registrar_pb2.AuthenticateRequest(realm="example.com")
        )
        assert challenge.response.code == 401
        with pytest.raises(InvalidArgument, match="realm"):
            await client.authenticate(registrar_pb2.AuthenticateRequest())

        static = common_pb2.Binding(aor="carol@example.com", contact="sip:carol@192.0.2.3")
        await client.add_location(registrar_pb2.AddLocationRequest(binding=static))
        shown = await client.show_location(registrar_pb2.ShowLocationRequest())
        assert [b.aor for b in shown.bindings] == ["alice@example.com", "carol@example.com"]
        removed = await client.remove_location(
            registrar_pb2.RemoveLocationRequest(aor="carol@example.com")
        )
        assert removed.removed == 1
        with pytest.raises(NotFound, match="carol"):
            await client.remove_location(
                registrar_pb2.RemoveLocationRequest(aor="carol@example.com")
            )


# -- presence ---------------------------------------------------------------------------------


@dataclass
class MemoryPresence:
    events: list[str] = field(default_factory=list)

    async def handle(
        self, request: presence_pb2.HandleRequest, *, timeout: float | None = None
    ) -> presence_pb2.HandleReply:
        notify = common_pb2.OutboundRequest(
            kind=common_pb2.OutboundRequest.KIND_REQUEST, raw=b"NOTIFY", edge_id="edge-1"
        )
        return presence_pb2.HandleReply(
            response=registrar_pb2.SipResponse(code=202, reason="Accepted"), requests=[notify]
        )

    async def deliver(
        self, request: presence_pb2.DeliverRequest, *, timeout: float | None = None
    ) -> presence_pb2.DeliverReply:
        self.events.extend(event.id for event in request.events)
        return presence_pb2.DeliverReply(accepted=len(request.events))


async def test_presence_handle_and_deliver(
    serve: Callable[..., Awaitable[tuple[grpc.aio.Server, str]]],
) -> None:
    from sipmesh.gen.sipmesh.v1 import events_pb2

    service = MemoryPresence()
    _, address = await serve(lambda server: add_presence_servicer(server, service))
    client = GrpcPresenceClient(address, FAST)
    await client.start()
    try:
        reply = await client.handle(presence_pb2.HandleRequest(authenticated_user="a@x"))
        assert reply.response.code == 202
        assert reply.requests[0].raw == b"NOTIFY"
        delivered = await client.deliver(
            presence_pb2.DeliverRequest(events=[events_pb2.Envelope(id="e1")])
        )
        assert delivered.accepted == 1
        assert service.events == ["e1"]
    finally:
        await client.close()


# -- edge ---------------------------------------------------------------------------------------


@dataclass
class MemoryEdge:
    edge_id: str
    sent: list[bytes] = field(default_factory=list)

    async def send(
        self, request: common_pb2.OutboundRequest, *, timeout: float | None = None
    ) -> edge_pb2.SendResult:
        if request.edge_id and request.edge_id != self.edge_id:
            return edge_pb2.SendResult(outcome=edge_pb2.SendResult.OUTCOME_NO_FLOW)
        self.sent.append(request.raw)
        return edge_pb2.SendResult(
            outcome=edge_pb2.SendResult.OUTCOME_RESPONSE, status=200, detail=self.edge_id
        )

    async def info(
        self, request: edge_pb2.EdgeInfoRequest, *, timeout: float | None = None
    ) -> edge_pb2.EdgeInfo:
        return edge_pb2.EdgeInfo(edge_id=self.edge_id, flows=len(self.sent))


@dataclass
class Directory:
    addresses: dict[str, str]

    async def address_of(self, edge_id: str) -> str:
        return self.addresses[edge_id]


async def test_edge_send_reaches_the_owning_instance(
    serve: Callable[..., Awaitable[tuple[grpc.aio.Server, str]]],
) -> None:
    edges = {name: MemoryEdge(name) for name in ("edge-1", "edge-2")}
    directory = Directory({})
    for name, edge in edges.items():
        _, address = await serve(lambda server, edge=edge: add_edge_servicer(server, edge))
        directory.addresses[name] = address
    client = GrpcEdgeClient(directory, options=FAST)
    await client.start()
    try:
        results = await asyncio.gather(
            *(
                client.send(
                    common_pb2.OutboundRequest(raw=f"N{i}".encode(), edge_id=f"edge-{i % 2 + 1}")
                )
                for i in range(10)
            )
        )
        assert [r.detail for r in results] == [f"edge-{i % 2 + 1}" for i in range(10)]
        assert sorted(edges["edge-1"].sent) == [b"N0", b"N2", b"N4", b"N6", b"N8"]
        assert sorted(edges["edge-2"].sent) == [b"N1", b"N3", b"N5", b"N7", b"N9"]
        info = await client.info(edge_pb2.EdgeInfoRequest(edge_id="edge-2"))
        assert (info.edge_id, info.flows) == ("edge-2", 5)
        with pytest.raises(Unavailable, match="edge-9"):
            await client.send(common_pb2.OutboundRequest(raw=b"x", edge_id="edge-9"))
        with pytest.raises(Unavailable, match="no edge"):
            await client.send(common_pb2.OutboundRequest(raw=b"x"))
    finally:
        await client.close()


# -- media relay ---------------------------------------------------------------------------------


@dataclass
class MemoryRelay:
    name: str
    sessions: set[str] = field(default_factory=set)

    async def offer(
        self, request: media_relay_pb2.OfferRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        self.sessions.add(request.key.call_id)
        return media_relay_pb2.SdpReply(sdp=self.name.encode())

    async def answer(
        self, request: media_relay_pb2.AnswerRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.SdpReply:
        if request.key.call_id not in self.sessions:
            raise NotFound(f"no session {request.key.call_id}")
        return media_relay_pb2.SdpReply(sdp=self.name.encode())

    async def delete(
        self, request: media_relay_pb2.DeleteRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.DeleteReply:
        self.sessions.remove(request.key.call_id)
        return media_relay_pb2.DeleteReply()

    async def query(
        self, request: media_relay_pb2.QueryRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.QueryReply:
        return media_relay_pb2.QueryReply(stats=media_relay_pb2.SessionStats(key=request.key))

    async def list_sessions(
        self, request: media_relay_pb2.ListSessionsRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.ListSessionsReply:
        return media_relay_pb2.ListSessionsReply(total=len(self.sessions))

    async def ping(
        self, request: media_relay_pb2.RelayPingRequest, *, timeout: float | None = None
    ) -> media_relay_pb2.RelayPingReply:
        return media_relay_pb2.RelayPingReply(relay_id=self.name, sessions=len(self.sessions))


def key(call_id: str) -> media_relay_pb2.MediaSessionKey:
    return media_relay_pb2.MediaSessionKey(call_id=call_id, from_tag="f", to_tag="t")


async def test_media_relay_calls_of_one_session_meet_on_one_relay(
    serve: Callable[..., Awaitable[tuple[grpc.aio.Server, str]]],
) -> None:
    relays = [MemoryRelay("m1"), MemoryRelay("m2")]
    servers = []
    for relay in relays:
        servers.append(
            await serve(lambda server, relay=relay: add_media_relay_servicer(server, relay))
        )
    target = ",".join(address for _, address in servers)
    client = GrpcMediaRelayClient(target, FAST, cooldown=60)
    await client.start()
    try:
        call_ids = [f"call-{i}" for i in range(40)]
        for call_id in call_ids:
            offered = await client.offer(media_relay_pb2.OfferRequest(key=key(call_id), sdp=b"v=0"))
            answered = await client.answer(
                media_relay_pb2.AnswerRequest(key=key(call_id), sdp=b"v=0")
            )
            assert offered.sdp == answered.sdp  # same relay both times
        assert relays[0].sessions
        assert relays[1].sessions
        assert relays[0].sessions | relays[1].sessions == set(call_ids)
        listed = await client.list_sessions(media_relay_pb2.ListSessionsRequest())
        assert listed.total == 40

        # A relay that stops answering is skipped; its calls move to the other one.
        first_address = servers[0][1]
        lost = next(c for c in call_ids if client.relay_for(c) == first_address)
        kept = next(c for c in call_ids if client.relay_for(c) != first_address)
        await servers[0][0].stop(0)
        with pytest.raises(Unavailable):
            await client.offer(media_relay_pb2.OfferRequest(key=key(lost), sdp=b"v=0"))
        moved = await client.offer(media_relay_pb2.OfferRequest(key=key(lost), sdp=b"v=0"))
        assert moved.sdp == b"m2"
        await client.delete(media_relay_pb2.DeleteRequest(key=key(kept)))
        assert kept not in relays[1].sessions
    finally:
        await client.close()
