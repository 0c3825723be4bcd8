"""The gRPC admin API's tokens against a running in-process sipmesh (services/admin/auth.py).

The same tokens as REST: none or unknown → UNAUTHENTICATED, the read token on a
write → PERMISSION_DENIED; the other services on the same gRPC port take no token.
"""

from __future__ import annotations

import grpc
import pytest

from sipmesh.admin.base import AUDIT_SUBJECT
from sipmesh.admin.routes import ROUTES
from sipmesh.clients.admin_api import GrpcAdminClient
from sipmesh.clients.admin_auth import ADMIN_RPC_ACCESS, rpc_name
from sipmesh.clients.errors import PermissionDenied, Unauthenticated
from sipmesh.clients.grpc_clients import GrpcRegistrarClient
from sipmesh.gen.sipmesh.v1 import admin_pb2, admin_pb2_grpc, events_pb2, registrar_pb2
from sipmesh.runtime.backends import BusModule
from sipmesh.state.bus import Message
from tests.admin.embedded import DOMAIN, READ, WRITE, Embedded

pytestmark = pytest.mark.timeout(60)


def _sub(name: str) -> admin_pb2.SubscriberAddRequest:
    return admin_pb2.SubscriberAddRequest(username=name, domain=DOMAIN, password="pw")


async def test_no_token_or_a_wrong_one_is_unauthenticated(admin: Embedded) -> None:
    for token in ("", "wrong", WRITE + "x"):
        async with GrpcAdminClient(admin.grpc, token=token) as client:
            with pytest.raises(Unauthenticated, match="valid admin token"):
                await client.ping(admin_pb2.PingAdminRequest(), timeout=5)
            with pytest.raises(Unauthenticated):
                await client.subscriber_add(_sub("mallory"), timeout=5)
    async with GrpcAdminClient(admin.grpc, token=WRITE) as client:
        listed = await client.subscriber_list(admin_pb2.ListRequest(), timeout=5)
    assert [s.username for s in listed.subscribers] == []


async def test_read_token_reads_but_may_not_write(admin: Embedded) -> None:
    async with GrpcAdminClient(admin.grpc, token=READ) as client:
        pong = await client.ping(admin_pb2.PingAdminRequest(), timeout=5)
        assert pong.instance == "embedded-1"
        await client.subscriber_list(admin_pb2.ListRequest(), timeout=5)
        await client.stats(admin_pb2.StatsRequest(group="core"), timeout=5)
        with pytest.raises(PermissionDenied, match="only read; SubscriberAdd writes"):
            await client.subscriber_add(_sub("ro"), timeout=5)
        with pytest.raises(PermissionDenied):
            await client.ban_add(admin_pb2.Ban(ip="198.51.100.1", duration=30), timeout=5)
        with pytest.raises(PermissionDenied):
            await client.reload(admin_pb2.ReloadRequest(), timeout=5)
    async with GrpcAdminClient(admin.grpc, token=WRITE) as client:
        listed = await client.subscriber_list(admin_pb2.ListRequest(), timeout=5)
    assert list(listed.subscribers) == []  # the refused write changed nothing


async def test_write_token_writes_and_is_the_audited_actor(admin: Embedded) -> None:
    bus = admin.runtime.get("bus", BusModule).bus
    seen: list[events_pb2.AuditEvent] = []

    async def on_audit(message: Message) -> None:
        env = events_pb2.Envelope()
        env.ParseFromString(message.data)
        seen.append(env.audit)

    sub = await bus.subscribe(AUDIT_SUBJECT, on_audit)
    try:
        async with GrpcAdminClient(admin.grpc, token=WRITE) as client:
            added = await client.subscriber_add(_sub("wanda"), timeout=5)
            assert added.username == "wanda"
            await client.ban_add(admin_pb2.Ban(ip="198.51.100.2", duration=30), timeout=5)
            await client.ban_remove(admin_pb2.Ban(ip="198.51.100.2"), timeout=5)
    finally:
        await sub.stop()
    assert [(a.operation, a.ok) for a in seen] == [
        ("subscriber.add", True),
        ("ban.add", True),
        ("ban.rm", True),
    ]
    assert {a.actor for a in seen} == {"token:write"}
    assert all(a.remote.startswith("127.0.0.1:") for a in seen)


async def test_bearer_metadata_forms(admin: Embedded) -> None:
    """The scheme is case-insensitive (RFC 7235 §2.1); a bare token is no bearer token."""
    async with grpc.aio.insecure_channel(admin.grpc) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        request = admin_pb2.PingAdminRequest()
        for value in (f"Bearer {WRITE}", f"bearer {WRITE}", f"BEARER  {WRITE} "):
            await stub.Ping(request, metadata=(("authorization", value),), timeout=5)
        for metadata in ((("authorization", WRITE),), (("x-token", WRITE),), ()):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Ping(request, metadata=metadata, timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.BanAdd(
                admin_pb2.Ban(ip="198.51.100.3"),
                metadata=(("authorization", f"Bearer {READ}"),),
                timeout=5,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_inter_service_calls_on_the_same_port_need_no_token(admin: Embedded) -> None:
    async with GrpcRegistrarClient(admin.grpc) as registrar:
        reply = await registrar.is_registered(
            registrar_pb2.IsRegisteredRequest(aor=f"nobody@{DOMAIN}"), timeout=5
        )
        assert reply.registered is False
        shown = await registrar.show_location(registrar_pb2.ShowLocationRequest(), timeout=5)
        assert list(shown.bindings) == []


def test_rest_routes_take_their_token_rule_from_the_same_table() -> None:
    """A read RPC's route is a GET (and the read token may call it); every other
    route needs the write token, as its RPC over gRPC does."""
    for spec in ROUTES:
        assert spec.write == (ADMIN_RPC_ACCESS[rpc_name(spec.rpc)] == "write"), spec.rpc
        assert (spec.method == "GET") == (not spec.write), spec.rpc
