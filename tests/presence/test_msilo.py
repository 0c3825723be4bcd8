"""Offline messages (msilo, RFC 3428 pager mode): store with 202, deliver in order
when the user registers, remove only after a 2xx."""

from __future__ import annotations

import uuid

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.presence.testing import DOMAIN, MakeHarness, sip

CONTACT = "sip:carol@127.0.0.1:5090"


def message(text: str, n: int, to: str = "carol") -> bytes:
    return sip(
        f"MESSAGE sip:{to}@{DOMAIN} SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKm{n}\n"
        "Max-Forwards: 70\n"
        f"From: <sip:alice@{DOMAIN}>;tag=m{n}\nTo: <sip:{to}@{DOMAIN}>\n"
        f"Call-ID: msg{n}@test\nCSeq: 1 MESSAGE\nContent-Type: text/plain\n\n{text}"
    )


def registered(aor: str = f"carol@{DOMAIN}") -> bytes:
    env = events_pb2.Envelope(
        id=uuid.uuid4().hex,
        service="registrar",
        registration=events_pb2.RegistrationEvent(
            kind=events_pb2.RegistrationEvent.KIND_ADDED,
            binding=common_pb2.Binding(
                aor=aor,
                contact=CONTACT,
                edge_id="edge-1",
                flow_id="flow-5090",
                source=common_pb2.Address(
                    transport=common_pb2.TRANSPORT_UDP, host="127.0.0.1", port=5090
                ),
            ),
            contacts=1,
        ),
    )
    return env.SerializeToString()


async def test_store_then_deliver_in_order_on_registration(make: MakeHarness) -> None:
    h = await make()
    for n, text in enumerate(["first", "second", "third"]):
        r = await h.request(message(text, n), store_offline=True)
        assert r.status == 202
    assert len(await h.service.msilo.pending("carol", DOMAIN, h.service.now())) == 3
    await h.service._bus.publish("sipmesh.registration.added", registered())
    await h.settle(lambda: len(h.edge.messages()) == 3)
    sent = h.edge.messages()
    assert [m.body for m in sent] == [b"first", b"second", b"third"]
    assert all(m.uri == CONTACT for m in sent)
    assert (sent[0].get("From") or "").startswith(f"<sip:alice@{DOMAIN}>")
    assert sent[0].get("Date")
    assert h.edge.sent[0].out.flow_id == "flow-5090"
    await h.settle(lambda: h.service.msilo.dumped == 3)
    assert await h.service.msilo.pending("carol", DOMAIN, h.service.now()) == []


async def test_failed_delivery_keeps_messages(make: MakeHarness) -> None:
    h = await make()
    h.edge.status = 480
    await h.request(message("kept", 1), store_offline=True)
    await h.request(message("also kept", 2), store_offline=True)
    await h.service._bus.publish("sipmesh.registration.added", registered())
    await h.settle(lambda: h.service.msilo.failed == 1)
    # The first failed: it and the one after it wait for the next registration.
    assert len(h.edge.messages()) == 1
    rows = await h.service.msilo.pending("carol", DOMAIN, h.service.now())
    assert [bytes(r["body"]) for r in rows] == [b"kept", b"also kept"]
    assert all(int(r["status"]) == 0 for r in rows)
    h.edge.status = 200
    await h.service._bus.publish("sipmesh.registration.added", registered())
    await h.settle(lambda: h.service.msilo.dumped == 2)
    assert await h.service.msilo.pending("carol", DOMAIN, h.service.now()) == []


async def test_per_user_limit_and_expiry(make: MakeHarness) -> None:
    h = await make(msilo_max_messages=2, msilo_expire_time=3600)
    assert (await h.request(message("1", 1), store_offline=True)).status == 202
    assert (await h.request(message("2", 2), store_offline=True)).status == 202
    full = await h.request(message("3", 3), store_offline=True)
    assert full.status == 486
    # Another user is not affected.
    assert (await h.request(message("x", 4, to="dave"), store_offline=True)).status == 202
    h.clock.advance(3601)
    await h.service.sweep()
    assert await h.service.store.db.fetch("SELECT id FROM silo") == []


async def test_message_without_store_offline_is_not_stored(make: MakeHarness) -> None:
    h = await make()
    r = await h.request(message("hi", 9))
    assert r.status == 404
    assert await h.service.store.db.fetch("SELECT id FROM silo") == []
