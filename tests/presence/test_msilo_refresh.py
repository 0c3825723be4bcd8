"""msilo: a re-REGISTER (binding refreshed) delivers what waits, as kamailio.cfg's
m_dump() after every save() — messages a contact refused are not stuck until the
binding expires."""

from __future__ import annotations

import uuid

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2, presence_pb2
from sipmesh.presence.testing import DOMAIN, MakeHarness, sip

CONTACT = "sip:carol@127.0.0.1:5091"


def registration(kind: events_pb2.RegistrationEvent.Kind.ValueType) -> events_pb2.Envelope:
    return events_pb2.Envelope(
        id=uuid.uuid4().hex,
        service="registrar",
        registration=events_pb2.RegistrationEvent(
            kind=kind, binding=common_pb2.Binding(aor=f"carol@{DOMAIN}", contact=CONTACT)
        ),
    )


async def test_refused_message_is_delivered_at_the_next_refresh(make: MakeHarness) -> None:
    h = await make()
    raw = sip(
        f"MESSAGE sip:carol@{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr1\n"
        f"Max-Forwards: 70\nFrom: <sip:alice@{DOMAIN}>;tag=r1\nTo: <sip:carol@{DOMAIN}>\n"
        "Call-ID: refresh1@test\nCSeq: 1 MESSAGE\nContent-Type: text/plain\n\nlater"
    )
    assert (await h.request(raw, store_offline=True)).status == 202
    h.edge.status = 486
    bus = h.service._bus
    added = registration(events_pb2.RegistrationEvent.KIND_ADDED)
    await bus.publish("sipmesh.registration.added", added.SerializeToString())
    await h.settle(lambda: h.service.msilo.failed == 1)
    h.edge.status = 200
    refreshed = registration(events_pb2.RegistrationEvent.KIND_REFRESHED)
    await bus.publish("sipmesh.registration.refreshed", refreshed.SerializeToString())
    await h.settle(lambda: h.service.msilo.dumped == 1)
    assert [m.body for m in h.edge.messages()] == [b"later", b"later"]
    assert await h.service.msilo.pending("carol", DOMAIN, h.service.now()) == []
    # A removed binding delivers nothing (and is no error).
    removed = registration(events_pb2.RegistrationEvent.KIND_REMOVED)
    reply = await h.service.deliver(presence_pb2.DeliverRequest(events=[removed]))
    assert reply.accepted == 0
