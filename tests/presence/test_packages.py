"""presence.winfo (RFC 3857/3858), the authorisation policies, dialog (RFC 4235) fed
by call events, and message-summary (RFC 3842)."""

from __future__ import annotations

import uuid

from sipmesh.gen.sipmesh.v1 import events_pb2, presence_pb2
from sipmesh.presence.model import ACTIVE
from sipmesh.presence.testing import DOMAIN, MakeHarness, pidf

ALICE = f"sip:alice@{DOMAIN}"


async def test_winfo_reports_bob_watching_alice(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("alice", "alice", event="presence.winfo", port=5071)
    assert r.status == 200
    await h.settle(lambda: len(h.edge.notifies("sip:alice@127.0.0.1:5071")) == 1)
    first = h.edge.notifies("sip:alice@127.0.0.1:5071")[0]
    assert first.get("Content-Type") == "application/watcherinfo+xml"
    assert b'version="0"' in first.body
    assert b"<watcher " not in first.body
    await h.subscribe("bob", "alice", port=5080)
    await h.settle(lambda: len(h.edge.notifies("sip:alice@127.0.0.1:5071")) == 2)
    second = h.edge.notifies("sip:alice@127.0.0.1:5071")[1]
    assert b'version="1"' in second.body
    assert b'status="active"' in second.body
    assert f"sip:bob@{DOMAIN}</watcher>".encode() in second.body


async def test_winfo_of_someone_else_is_403(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("bob", "alice", event="presence.winfo")
    assert r.status == 403


async def test_domain_policy_rejects_foreign_watcher(make: MakeHarness) -> None:
    h = await make(policy="domain")
    ok = await h.subscribe("bob", "alice")
    assert ok.status == 200
    raw_foreign = await h.subscribe(
        "mallory", "alice", extra="", call_id="f1", from_tag="x", port=5099
    )
    assert raw_foreign.status == 200  # same domain in this helper
    # A watcher of another domain:
    from sipmesh.presence.testing import sip

    foreign = await h.request(
        sip(
            f"SUBSCRIBE sip:alice@{DOMAIN} SIP/2.0\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5098;branch=z9hG4bKfor1\n"
            "From: <sip:eve@other.org>;tag=e1\n"
            f"To: <sip:alice@{DOMAIN}>\nCall-ID: eve@test\nCSeq: 1 SUBSCRIBE\n"
            "Contact: <sip:eve@127.0.0.1:5098>\nEvent: presence\nExpires: 600\n"
        )
    )
    assert foreign.status == 403


async def test_watchers_policy_pending_then_allowed(make: MakeHarness) -> None:
    h = await make(policy="watchers")
    await h.subscribe("alice", "alice", event="presence.winfo", port=5071)
    await h.publish("alice", pidf(ALICE, "open"))
    r = await h.subscribe("bob", "alice", port=5080)
    assert r.status == 202
    bob = "sip:bob@127.0.0.1:5080"
    await h.settle(lambda: len(h.edge.notifies(bob)) == 1)
    pending = h.edge.notifies(bob)[0]
    assert pending.get("Subscription-State") == "pending;expires=600"
    assert pending.body == b""  # no state for a pending watcher
    # Alice's watcher information lists Bob as pending.
    winfo = "sip:alice@127.0.0.1:5071"
    await h.settle(lambda: any(b'status="pending"' in n.body for n in h.edge.notifies(winfo)))
    # Alice allows Bob (admin API / table), then the instances re-decide.
    await h.service.store.set_watcher(ALICE, "bob", DOMAIN, "presence", ACTIVE, h.service.now())
    await h.service.refresh_watchers(ALICE)
    await h.settle(lambda: len(h.edge.notifies(bob)) == 2)
    active = h.edge.notifies(bob)[1]
    assert active.get("Subscription-State") == "active;expires=600"
    assert b"<basic>open</basic>" in active.body
    # A blocked watcher gets 403.
    await h.service.store.set_watcher(ALICE, "carol", DOMAIN, "presence", 3, h.service.now())
    assert (await h.subscribe("carol", "alice", port=5082)).status == 403


def _tx(method: str, status: int, call_id: str) -> events_pb2.Envelope:
    return events_pb2.Envelope(
        id=uuid.uuid4().hex,
        service="edge",
        transaction=events_pb2.TransactionEvent(
            method=method,
            status=status,
            call_id=call_id,
            from_tag="ft1",
            to_tag="tt1",
            from_user="alice",
            from_domain=DOMAIN,
            to_user="carol",
            to_domain=DOMAIN,
        ),
    )


async def test_call_produces_dialog_notifies(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("bob", "alice", event="dialog")
    assert r.status == 200
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    empty = h.edge.notifies()[0]
    assert empty.get("Content-Type") == "application/dialog-info+xml"
    assert b"<dialog " not in empty.body
    # Alice calls Carol: the edge publishes the INVITE's 200 on the bus.
    bus = h.service._bus
    await bus.publish(
        "sipmesh.transaction.INVITE", _tx("INVITE", 200, "call-1").SerializeToString()
    )
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    confirmed = h.edge.notifies()[1]
    assert b"<state>confirmed</state>" in confirmed.body
    assert b'direction="initiator"' in confirmed.body
    assert f"<identity>sip:carol@{DOMAIN}</identity>".encode() in confirmed.body
    assert b'version="1"' in confirmed.body
    await bus.publish("sipmesh.transaction.BYE", _tx("BYE", 200, "call-1").SerializeToString())
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    ended = h.edge.notifies()[2]
    assert b">terminated</state>" in ended.body
    # After the linger time the call is gone from the state.
    h.clock.advance(10)
    await h.service.sweep()
    await h.settle(lambda: len(h.edge.notifies()) == 4)
    assert b"<dialog " not in h.edge.notifies()[3].body


async def test_dialog_event_via_deliver(make: MakeHarness) -> None:
    h = await make()
    await h.subscribe("bob", "carol", event="dialog")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    early = events_pb2.Envelope(
        id="d1",
        service="router",
        dialog=events_pb2.DialogEvent(
            state=events_pb2.DialogEvent.STATE_EARLY,
            call_id="call-2",
            from_tag="a",
            to_tag="b",
            caller=ALICE,
            callee=f"sip:carol@{DOMAIN}",
        ),
    )
    reply = await h.service.deliver(presence_pb2.DeliverRequest(events=[early]))
    assert reply.accepted == 1
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    body = h.edge.notifies()[1].body
    assert b"<state>early</state>" in body
    assert b'direction="recipient"' in body


async def test_message_summary_publish_and_admin(make: MakeHarness) -> None:
    h = await make()
    await h.subscribe("bob", "bob", event="message-summary")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    assert h.edge.notifies()[0].body == b"Messages-Waiting: no\r\n"
    mwi = (
        "Messages-Waiting: yes\r\n"
        "Message-Account: sip:bob@example.com\r\n"
        "Voice-Message: 2/8 (0/2)\r\n"
    )
    r = await h.publish(
        "bob", mwi, event="message-summary", ctype="application/simple-message-summary"
    )
    assert r.status == 200
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    assert h.edge.notifies()[1].body == mwi.encode()
    bad = await h.publish(
        "bob", "hello", event="message-summary", ctype="application/simple-message-summary"
    )
    assert bad.status == 400
    # The admin API's way in: Deliver with a PresenceEvent.
    admin = events_pb2.Envelope(
        id="m1",
        service="admin",
        presence=events_pb2.PresenceEvent(
            event="message-summary",
            presentity=f"sip:bob@{DOMAIN}",
            content_type="application/simple-message-summary",
            body=b"Messages-Waiting: no\r\n",
        ),
    )
    assert (await h.service.deliver(presence_pb2.DeliverRequest(events=[admin]))).accepted == 1
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    assert h.edge.notifies()[2].body.startswith(b"Messages-Waiting:")
