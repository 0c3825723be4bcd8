"""The registrar contract: in process (the service object) and over real gRPC."""

from __future__ import annotations

import grpc
import pytest

from sipmesh.clients.errors import InvalidArgument, NotFound
from sipmesh.clients.grpc_clients import GrpcRegistrarClient
from sipmesh.clients.grpc_servers import add_registrar_servicer
from sipmesh.clients.interfaces import RegistrarClient
from sipmesh.gen.sipmesh.v1 import common_pb2, registrar_pb2
from sipmesh.registrar.testing import DOMAIN, MakeService, TestUA, add_subscriber, challenges_of
from sipmesh.sip.parser import parse_message

AOR = f"alice@{DOMAIN}"
SOURCE = common_pb2.Source(
    remote=common_pb2.Address(transport=common_pb2.TRANSPORT_TCP, host="198.51.100.9", port=5099),
    socket="tcp:203.0.113.1:5060",
    edge_id="edge-7",
    flow_id="flow-3",
    nat_detected=True,
)


def _msg(raw: bytes) -> common_pb2.SipMessage:
    return common_pb2.SipMessage(raw=raw, source=SOURCE)


async def _exercise(client: RegistrarClient, reg_db: object) -> None:
    ua = TestUA(AOR, "secret")
    first = await client.register(
        registrar_pb2.RegisterRequest(message=_msg(bytes(ua.register(["<sip:a@10.0.0.1>"]))))
    )
    assert first.response.code == 401
    challenge_response = parse_message(first.response.raw)
    (challenge,) = challenges_of(challenge_response)  # type: ignore[arg-type]
    second = await client.register(
        registrar_pb2.RegisterRequest(
            message=_msg(bytes(ua.register(["<sip:a@10.0.0.1>"], challenge=challenge)))
        )
    )
    assert second.response.code == 200
    assert second.authenticated_user == AOR
    assert second.aor == AOR
    assert [c.kind for c in second.changes] == [registrar_pb2.RegistrationChange.KIND_ADDED]
    (b,) = second.bindings
    assert (b.edge_id, b.flow_id, b.transport) == ("edge-7", "flow-3", common_pb2.TRANSPORT_TCP)
    assert b.received == "sip:198.51.100.9:5099;transport=tcp"
    assert (b.source.host, b.source.port) == ("198.51.100.9", 5099)

    found = await client.lookup(registrar_pb2.LookupRequest(aor=f"sip:{AOR}"))
    assert found.result == registrar_pb2.LookupReply.RESULT_FOUND
    assert [x.contact for x in found.bindings] == ["sip:a@10.0.0.1"]
    missing = await client.lookup(registrar_pb2.LookupRequest(aor=f"bob@{DOMAIN}"))
    assert missing.result == registrar_pb2.LookupReply.RESULT_NOT_FOUND
    assert (await client.is_registered(registrar_pb2.IsRegisteredRequest(aor=AOR))).registered

    added = await client.add_location(
        registrar_pb2.AddLocationRequest(
            binding=common_pb2.Binding(aor=AOR, contact="sip:static@10.0.0.2")
        )
    )
    assert added.binding.ruid
    page1 = await client.show_location(registrar_pb2.ShowLocationRequest(limit=1))
    assert len(page1.bindings) == 1
    assert page1.next_page_token
    page2 = await client.show_location(
        registrar_pb2.ShowLocationRequest(limit=1, page_token=page1.next_page_token)
    )
    assert page2.next_page_token == ""
    contacts = {page1.bindings[0].contact, page2.bindings[0].contact}
    assert contacts == {"sip:a@10.0.0.1", "sip:static@10.0.0.2"}
    removed = await client.remove_location(
        registrar_pb2.RemoveLocationRequest(aor=AOR, contact="sip:static@10.0.0.2")
    )
    assert removed.removed == 1
    with pytest.raises(NotFound):
        await client.remove_location(
            registrar_pb2.RemoveLocationRequest(aor=AOR, contact="sip:none@10.0.0.3")
        )
    with pytest.raises(InvalidArgument):
        await client.register(registrar_pb2.RegisterRequest(message=_msg(b"garbage")))

    auth = await client.authenticate(
        registrar_pb2.AuthenticateRequest(
            message=_msg(bytes(ua.register([]))), mode=registrar_pb2.AuthenticateRequest.MODE_WWW
        )
    )
    assert auth.result == registrar_pb2.AuthenticateReply.RESULT_CHALLENGE
    assert auth.response.code == 401


async def test_in_process_service_is_the_client(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    assert isinstance(reg, RegistrarClient)
    await _exercise(reg, reg.db)


async def test_over_grpc(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    server = grpc.aio.server()
    add_registrar_servicer(server, reg)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GrpcRegistrarClient(f"127.0.0.1:{port}") as client:
            await _exercise(client, reg.db)
    finally:
        await server.stop(None)
