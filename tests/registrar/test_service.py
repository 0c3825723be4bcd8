"""REGISTER through the registrar service on the memory and the real Redis store.

Fake clock for expiry; the 200 and the store are checked, and the events on the bus.
"""

from __future__ import annotations

import asyncio

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.registrar.core import SourceFacts
from sipmesh.registrar.testing import DOMAIN, MakeService, Recorder, contact_expires, make_register
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.clock import FakeClock

AOR = f"alice@{DOMAIN}"
FACTS = SourceFacts(
    remote_host="198.51.100.7", remote_port=5060, transport="udp", edge_id="e1", flow_id="f1"
)


async def settle(recorder: Recorder, count: int) -> None:
    for _ in range(200):
        if len(recorder.messages) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {count} events, got {recorder.kinds()}")


async def test_register_refresh_expire_and_events(
    make_service: MakeService, clock: FakeClock
) -> None:
    bus = MemoryBus()
    recorder = Recorder()
    await bus.subscribe("sipmesh.registration.>", recorder)
    reg = await make_service(bus=bus, auth_register=False)

    first = await reg.save(make_register(AOR, ["<sip:alice@192.0.2.10>"], expires=120), FACTS)
    assert first.response.status == 200
    assert contact_expires(first.response) == {"sip:alice@192.0.2.10": 120}
    assert first.response.get("date")

    clock.advance(60)
    second = await reg.save(
        make_register(AOR, ["<sip:alice@192.0.2.10>"], expires=120, cseq=2), FACTS
    )
    assert contact_expires(second.response) == {"sip:alice@192.0.2.10": 120}
    assert second.bindings[0].ruid == first.bindings[0].ruid

    clock.advance(119)
    assert len((await reg.lookup_aor(AOR)).bindings) == 1
    clock.advance(2)
    assert (await reg.lookup_aor(AOR)).found is False
    expired = await reg.sweep()
    assert [b.contact for b in expired] == ["sip:alice@192.0.2.10"]
    assert await reg.sweep() == []  # reported once

    await settle(recorder, 3)
    assert recorder.kinds() == ["added", "refreshed", "expired"]
    env = events_pb2.Envelope.FromString(recorder.messages[0].data)
    assert env.service == "registrar"
    assert env.registration.kind == events_pb2.RegistrationEvent.KIND_ADDED
    assert env.registration.binding.aor == AOR
    assert env.registration.binding.edge_id == "e1"
    assert env.registration.contacts == 1
    await bus.close()


async def test_star_removes_every_binding(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False)
    await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]), FACTS)
    removed = await reg.save(make_register(AOR, ["*"], expires=0, cseq=2), FACTS)
    assert removed.response.status == 200
    assert removed.response.get_all("contact") == []
    assert await reg.store.get(AOR) == []
    bad = await reg.save(make_register(AOR, ["*"], cseq=3), FACTS)
    assert bad.response.status == 400


async def test_423_and_max_expires(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False, min_expires=300, max_expires=900)
    brief = await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>"], expires=30), FACTS)
    assert brief.response.status == 423
    assert brief.response.get("min-expires") == "300"
    assert await reg.store.get(AOR) == []
    long = await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>"], expires=5000, cseq=2), FACTS)
    assert contact_expires(long.response) == {"sip:a@192.0.2.1": 900}


async def test_max_contacts_reject_and_replace(make_service: MakeService, clock: FakeClock) -> None:
    strict = await make_service(auth_register=False, max_contacts=1)
    await strict.save(make_register(AOR, ["<sip:a@192.0.2.1>"]), FACTS)
    second = await strict.save(make_register(AOR, ["<sip:b@192.0.2.2>"], call_id="x"), FACTS)
    assert second.response.status == 403
    assert [b.contact for b in await strict.store.get(AOR)] == ["sip:a@192.0.2.1"]

    bob = f"bob@{DOMAIN}"
    lenient = await make_service(
        auth_register=False, max_contacts=1, max_contacts_policy="replace-oldest"
    )
    await lenient.save(make_register(bob, ["<sip:a@192.0.2.1>"]), FACTS)
    clock.advance(1)
    ok = await lenient.save(make_register(bob, ["<sip:b@192.0.2.2>"], call_id="y"), FACTS)
    assert ok.response.status == 200
    assert [b.contact for b in await lenient.store.get(bob)] == ["sip:b@192.0.2.2"]


async def test_path_and_outbound_through_the_service(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False)
    inst = '"<urn:uuid:11111111-2222-3333-4444-555555555555>"'
    req = make_register(
        AOR,
        [f"<sip:a@10.0.0.5:5060;transport=tcp>;+sip.instance={inst};reg-id=1"],
        extra=[("Path", "<sip:edge.example.com;lr;ob>"), ("Supported", "path, outbound")],
    )
    res = await reg.save(req, FACTS)
    assert res.response.status == 200
    assert res.response.get_all("path") == ["<sip:edge.example.com;lr;ob>"]
    assert res.response.get("require") == "outbound"
    found = await reg.lookup_aor(AOR)
    assert found.bindings[0].path == ("<sip:edge.example.com;lr;ob>",)
    assert found.bindings[0].reg_id == 1
    # Reconnected flow: same instance and reg-id replace the binding.
    req2 = make_register(
        AOR,
        [f"<sip:a@10.0.0.5:6000;transport=tcp>;+sip.instance={inst};reg-id=1"],
        extra=[("Path", "<sip:edge.example.com;lr;ob>"), ("Supported", "path, outbound")],
        call_id="new-call",
    )
    await reg.save(req2, SourceFacts(remote_host="198.51.100.7", flow_id="f2", edge_id="e2"))
    (only,) = (await reg.lookup_aor(AOR)).bindings
    assert only.contact == "sip:a@10.0.0.5:6000;transport=tcp"
    assert (only.edge_id, only.flow_id) == ("e2", "f2")


async def test_foreign_domain_and_domain_table(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False)
    other = "carol@other.example.net"
    res = await reg.save(make_register(other, ["<sip:c@192.0.2.3>"]), FACTS)
    assert res.response.status == 404
    await reg.db.execute("INSERT INTO domain (domain) VALUES ($1)", "other.example.net")
    reg.directory._domains_at = -1e18  # the 5 s domain cache, expired for the test
    res = await reg.save(make_register(other, ["<sip:c@192.0.2.3>"], cseq=2), FACTS)
    assert res.response.status == 200


async def test_lookup_order_aliases_and_method_filter(
    make_service: MakeService, clock: FakeClock
) -> None:
    reg = await make_service(auth_register=False, method_filtering=True)
    await reg.save(make_register(AOR, ["<sip:old@192.0.2.1>"], call_id="c1"), FACTS)
    clock.advance(5)
    await reg.save(
        make_register(
            AOR, ["<sip:new@192.0.2.2>"], call_id="c2", extra=[("Allow", "INVITE, ACK, BYE")]
        ),
        FACTS,
    )
    clock.advance(5)
    await reg.save(make_register(AOR, ["<sip:pref@192.0.2.3>;q=1.0"], call_id="c3"), FACTS)
    await reg.save(make_register(AOR, ["<sip:low@192.0.2.4>;q=0.2"], call_id="c4"), FACTS)
    found = await reg.lookup_aor(f"sip:{AOR}")
    # q=1.0 and no q tie: the most recently refreshed first; q=0.2 last.
    assert [b.contact for b in found.bindings] == [
        "sip:pref@192.0.2.3",
        "sip:new@192.0.2.2",
        "sip:old@192.0.2.1",
        "sip:low@192.0.2.4",
    ]
    msg = await reg.lookup_aor(AOR, method="MESSAGE")
    assert "sip:new@192.0.2.2" not in [b.contact for b in msg.bindings]
    await reg.db.execute(
        "INSERT INTO dbaliases (alias_username, alias_domain, username, domain) "
        "VALUES ($1, $2, $3, $4)",
        "ali",
        DOMAIN,
        "alice",
        DOMAIN,
    )
    via_alias = await reg.lookup_aor(f"ali@{DOMAIN}")
    assert via_alias.aor == AOR
    assert len(via_alias.bindings) == 4
    assert (await reg.lookup_aor(f"nobody@{DOMAIN}")).found is False


async def test_ul_remove_by_contact_and_aor(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False)
    await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"]), FACTS)
    assert await reg.remove(AOR, "sip:a@192.0.2.1") == 1
    assert [b.contact for b in await reg.show(AOR)] == ["sip:b@192.0.2.2"]
    assert await reg.remove(AOR) == 1
    assert await reg.show() == []


async def test_out_of_order_cseq_is_rejected(make_service: MakeService) -> None:
    reg = await make_service(auth_register=False)
    await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>"], cseq=10), FACTS)
    res = await reg.save(make_register(AOR, ["<sip:a@192.0.2.1>"], expires=0, cseq=9), FACTS)
    assert res.response.status == 500
    assert len(await reg.store.get(AOR)) == 1
