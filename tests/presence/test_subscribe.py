"""SUBSCRIBE (RFC 6665) for presence: dialog, NOTIFYs, refresh, expiry, errors."""

from __future__ import annotations

from sipmesh.gen.sipmesh.v1 import edge_pb2
from sipmesh.presence.testing import DOMAIN, MakeHarness, pidf, sip

B_CONTACT = "sip:bob@127.0.0.1:5080"


async def test_subscribe_gets_200_and_initial_notify(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("bob", "alice", expires=600)
    assert r.status == 200
    assert r.get("Expires") == "600"
    assert r.get("Contact") == "<sip:127.0.0.1:5060>"
    to_tag = r.to.tag
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    sent = h.edge.sent[0]
    notify = sent.request
    assert notify.uri == B_CONTACT
    assert notify.from_.tag == to_tag
    assert notify.to.tag == r.from_.tag
    assert notify.call_id == r.call_id
    assert notify.cseq.seq == 1
    assert notify.get("Event") == "presence"
    assert notify.get("Subscription-State") == "active;expires=600"
    assert notify.get("Content-Type") == "application/pidf+xml"
    assert b"<basic>closed</basic>" in notify.body  # neutral state: nothing published
    # Our own Via only: the edge puts its Via on top when it sends.
    assert len(notify.get_all("Via")) == 1
    # Handed to the edge owning the watcher's flow, aimed at the address it came from.
    assert sent.out.edge_id == "edge-1"
    assert sent.out.flow_id == "flow-5080"
    assert (sent.out.destination.host, sent.out.destination.port) == ("127.0.0.1", 5080)


async def test_publish_open_then_closed_notifies_each(make: MakeHarness) -> None:
    h = await make()
    await h.subscribe("bob", "alice")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    open_doc = pidf(f"sip:alice@{DOMAIN}", "open", note="away")
    r = await h.publish("alice", open_doc)
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    second = h.edge.notifies()[1]
    assert second.body == open_doc.encode()  # one publication: sent as published
    assert second.cseq.seq == 2
    await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "closed"), etag=r.get("SIP-ETag") or "")
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    third = h.edge.notifies()[2]
    assert b"<basic>closed</basic>" in third.body
    assert third.cseq.seq == 3


async def test_two_publications_are_composed(make: MakeHarness) -> None:
    h = await make()
    await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "open", tuple_id="phone"))
    await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "closed", tuple_id="pc", note="busy"))
    await h.subscribe("bob", "alice")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    body = h.edge.notifies()[0].body
    assert b'tuple id="phone"' in body
    assert b'tuple id="pc"' in body
    assert b"<rpid:busy/>" in body
    assert body.count(b"<presence ") == 1


async def test_expiry_sends_terminating_notify(make: MakeHarness) -> None:
    h = await make()
    await h.subscribe("bob", "alice", expires=120)
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    h.clock.advance(60)
    await h.service.sweep()
    assert len(h.edge.notifies()) == 1
    h.clock.advance(61)
    await h.service.sweep()
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    last = h.edge.notifies()[1]
    assert last.get("Subscription-State") == "terminated;reason=timeout"
    assert await h.service.store.all_subscriptions() == []
    assert h.service.manager.owned == {}


async def test_refresh_and_unsubscribe(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("bob", "alice", expires=120, call_id="dlg1", from_tag="bt")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    h.clock.advance(100)
    refreshed = await h.subscribe(
        "bob", "alice", expires=300, call_id="dlg1", from_tag="bt", to_tag=r.to.tag or "", cseq=2
    )
    assert refreshed.status == 200
    assert refreshed.get("Expires") == "300"
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    assert h.edge.notifies()[1].get("Subscription-State") == "active;expires=300"
    h.clock.advance(100)
    await h.service.sweep()  # not expired any more
    assert len(await h.service.store.all_subscriptions()) == 1
    bye = await h.subscribe(
        "bob", "alice", expires=0, call_id="dlg1", from_tag="bt", to_tag=r.to.tag or "", cseq=3
    )
    assert bye.status == 200
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    assert h.edge.notifies()[2].get("Subscription-State") == "terminated;reason=timeout"
    assert await h.service.store.all_subscriptions() == []


async def test_in_dialog_unknown_is_481(make: MakeHarness) -> None:
    h = await make()
    r = await h.subscribe("bob", "alice", to_tag="nosuchtag", cseq=2)
    assert r.status == 481


async def test_fetch_notifies_once_and_keeps_nothing(make: MakeHarness) -> None:
    h = await make()
    await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "open"))
    r = await h.subscribe("bob", "alice", expires=0)
    assert r.status == 200
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    notify = h.edge.notifies()[0]
    assert notify.get("Subscription-State") == "terminated;reason=timeout"
    assert b"<basic>open</basic>" in notify.body
    assert await h.service.store.all_subscriptions() == []


async def test_error_responses(make: MakeHarness) -> None:
    h = await make(min_expires=60)
    unknown = await h.subscribe("bob", "alice", event="no-such-package")
    assert unknown.status == 489
    assert "presence" in unknown.get_all("Allow-Events")
    brief = await h.subscribe("bob", "alice", expires=5)
    assert brief.status == 423
    assert brief.get("Min-Expires") == "60"
    bad = await h.subscribe("bob", "alice", expires=None, extra="Expires: soon")
    assert bad.status == 400
    assert await h.service.store.all_subscriptions() == []


async def test_481_from_watcher_ends_subscription(make: MakeHarness) -> None:
    h = await make()
    h.edge.status = 481
    await h.subscribe("bob", "alice")
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    await h.settle(lambda: h.service.manager.owned == {})
    assert await h.service.store.all_subscriptions() == []


async def test_timeout_ends_subscription(make: MakeHarness) -> None:
    h = await make()
    h.edge.outcome = edge_pb2.SendResult.OUTCOME_TIMEOUT
    await h.subscribe("bob", "alice")
    await h.settle(lambda: h.service.manager.owned == {})
    assert await h.service.store.all_subscriptions() == []


async def test_no_flow_falls_back_to_any_edge(make: MakeHarness) -> None:
    h = await make()
    h.edge.outcome = edge_pb2.SendResult.OUTCOME_NO_FLOW
    await h.subscribe("bob", "alice")
    await h.settle(lambda: len(h.edge.sent) == 2)
    assert h.edge.sent[0].out.flow_id == "flow-5080"
    assert h.edge.sent[1].out.edge_id == ""
    assert h.edge.sent[1].out.flow_id == ""


async def test_same_initial_subscribe_twice_is_one_subscription(make: MakeHarness) -> None:
    h = await make()
    raw = sip(
        f"SUBSCRIBE sip:alice@{DOMAIN} SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKdup1\n"
        f"From: <sip:bob@{DOMAIN}>;tag=ft\nTo: <sip:alice@{DOMAIN}>\n"
        "Call-ID: dup@test\nCSeq: 7 SUBSCRIBE\nContact: <sip:bob@127.0.0.1:5090>\n"
        "Event: presence\nExpires: 600\n"
    )
    first = await h.request(raw)
    # The same request again (a retry through another router/instance): one dialog.
    again = await h.request(raw)
    assert first.status == again.status == 200
    assert first.to.tag == again.to.tag
    assert len(await h.service.store.all_subscriptions()) == 1


async def test_record_route_becomes_route_set(make: MakeHarness) -> None:
    h = await make()
    await h.subscribe(
        "bob", "alice", extra="Record-Route: <sip:p2.example.net;lr>, <sip:p1.example.net;lr>"
    )
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    notify = h.edge.notifies()[0]
    assert notify.get_all("Route") == ["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
