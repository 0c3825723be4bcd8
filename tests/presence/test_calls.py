"""The dialog package fed by call events (services/presence/calls.py): only relayed
calls count, and the two event paths of the edge (DialogEvent and the INVITE's
TransactionEvent) give one NOTIFY per state change, never a step back."""

from __future__ import annotations

import asyncio
import uuid

from sipmesh.gen.sipmesh.v1 import events_pb2, presence_pb2
from sipmesh.presence.calls import etags
from sipmesh.presence.testing import DOMAIN, Harness, MakeHarness

ALICE = f"sip:alice@{DOMAIN}"
CAROL = f"sip:carol@{DOMAIN}"
_Dlg = events_pb2.DialogEvent


def tx(status: int, *, relayed: bool = True, method: str = "INVITE") -> events_pb2.Envelope:
    event = events_pb2.TransactionEvent(
        method=method,
        status=status,
        call_id="call-9",
        from_tag="ft",
        to_tag="tt",
        from_user="alice",
        from_domain=DOMAIN,
        to_user="carol",
        to_domain=DOMAIN,
    )
    if relayed:
        event.dst_uri = "sip:carol@127.0.0.1:5099"
    return events_pb2.Envelope(id=uuid.uuid4().hex, service="edge", transaction=event)


def dlg(state: _Dlg.State.ValueType, reason: str = "") -> events_pb2.Envelope:
    return events_pb2.Envelope(
        id=uuid.uuid4().hex,
        service="edge",
        dialog=_Dlg(
            state=state,
            call_id="call-9",
            from_tag="ft",
            to_tag="tt",
            caller=ALICE,
            callee=CAROL,
            reason=reason,
        ),
    )


async def watching_alice(make: MakeHarness) -> Harness:
    h = await make()
    assert (await h.subscribe("bob", "alice", event="dialog")).status == 200
    await h.settle(lambda: len(h.edge.notifies()) == 1)
    return h


async def feed(h: Harness, *events: events_pb2.Envelope) -> None:
    for envelope in events:
        await h.service.deliver(presence_pb2.DeliverRequest(events=[envelope]))
    await h.service.drain()


async def test_a_challenge_or_local_rejection_is_not_a_call(make: MakeHarness) -> None:
    h = await watching_alice(make)
    # The router's own 407 and 404 (no branch relayed), and a 401 from downstream.
    await feed(h, tx(407, relayed=False), tx(404, relayed=False), tx(401))
    assert len(h.edge.notifies()) == 1
    rows = await h.service.store.publications_by_etag("dialog", ["dlg-x"])
    assert rows == []
    # A relayed call that fails is reported (RFC 4235 §3.7.1 "rejected").
    await feed(h, tx(486))
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    assert b'<state event="rejected">terminated</state>' in h.edge.notifies()[1].body


async def test_both_event_paths_give_one_notify_per_state(make: MakeHarness) -> None:
    h = await watching_alice(make)
    await feed(h, dlg(_Dlg.STATE_EARLY))
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    # The edge's DialogEvent answer and the INVITE's 200 TransactionEvent: one NOTIFY.
    await feed(h, dlg(_Dlg.STATE_ANSWER), tx(200))
    await h.settle(lambda: len(h.edge.notifies()) >= 3)
    await feed(h, dlg(_Dlg.STATE_END, "bye"), tx(200, method="BYE"))
    await h.settle(lambda: len(h.edge.notifies()) >= 4)
    states = [n.body.split(b"<state")[1].split(b"</state>")[0] for n in h.edge.notifies()[1:]]
    # RFC 4235 §4.1.2: who hung up is not known from a plain "bye": remote-bye.
    assert states == [b">early", b">confirmed", b' event="remote-bye">terminated'], states


async def _ended_states(h: Harness) -> dict[str, bytes]:
    stored = await h.service.store.publications_by_etag("dialog", list(etags("call-9")))
    return {p.username: p.body.split(b"<state")[1].split(b"</state>")[0] for p in stored}


async def test_the_side_that_hung_up_sees_local_bye_the_other_remote_bye(
    make: MakeHarness,
) -> None:
    h = await watching_alice(make)
    await feed(h, dlg(_Dlg.STATE_ANSWER))
    # The edge says the callee sent the BYE (services/edge/dialogs.py).
    await feed(h, dlg(_Dlg.STATE_END, "bye callee"))
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    assert await _ended_states(h) == {
        "alice": b' event="remote-bye">terminated',
        "carol": b' event="local-bye">terminated',
    }
    assert b'<state event="remote-bye">terminated</state>' in h.edge.notifies()[2].body


async def test_a_bye_transaction_event_tells_who_hung_up_by_its_from_tag(
    make: MakeHarness,
) -> None:
    h = await watching_alice(make)
    await feed(h, tx(200))
    # A BYE from alice (the caller): its From tag is the INVITE's ("ft").
    await feed(h, tx(200, method="BYE"))
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    assert await _ended_states(h) == {
        "alice": b' event="local-bye">terminated',
        "carol": b' event="remote-bye">terminated',
    }


async def test_a_cancelled_call_is_cancelled(make: MakeHarness) -> None:
    h = await watching_alice(make)
    await feed(h, dlg(_Dlg.STATE_EARLY), dlg(_Dlg.STATE_END, "cancel"))
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    assert b'<state event="cancelled">terminated</state>' in h.edge.notifies()[2].body


async def test_an_unanswered_call_timed_out(make: MakeHarness) -> None:
    h = await watching_alice(make)
    await feed(h, tx(408))
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    assert b'<state event="timeout">terminated</state>' in h.edge.notifies()[1].body


async def test_a_late_event_does_not_bring_an_ended_call_back(make: MakeHarness) -> None:
    h = await watching_alice(make)
    await feed(h, dlg(_Dlg.STATE_ANSWER))
    await h.settle(lambda: len(h.edge.notifies()) == 2)
    await feed(h, dlg(_Dlg.STATE_END, "bye"))
    await h.settle(lambda: len(h.edge.notifies()) == 3)
    # Events of other subjects overtaken on the bus: early, then the INVITE's 200.
    await feed(h, dlg(_Dlg.STATE_EARLY), tx(200))
    assert len(h.edge.notifies()) == 3
    assert b">terminated</state>" in h.edge.notifies()[2].body


async def test_concurrent_events_of_one_call_keep_the_newest_state(make: MakeHarness) -> None:
    """Events of one call processed at once (as by two instances of a queue group):
    the compare-and-set write makes a stale one re-read instead of overwriting."""
    h = await watching_alice(make)
    await asyncio.gather(
        *(
            h.service.deliver(presence_pb2.DeliverRequest(events=[e]))
            for e in (dlg(_Dlg.STATE_ANSWER), dlg(_Dlg.STATE_EARLY), tx(200), dlg(_Dlg.STATE_START))
        )
    )
    await h.service.drain()
    stored = await h.service.store.publications_by_etag("dialog", list(etags("call-9")))
    assert len(stored) == 2
    assert all(b"<state>confirmed</state>" in p.body for p in stored)
    await h.settle(lambda: b"confirmed" in h.edge.notifies()[-1].body)
    seen = [n.body.split(b"<state")[1][:12] for n in h.edge.notifies()[1:]]
    assert b">confirmed<" in seen[-1]
