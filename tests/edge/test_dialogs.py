"""Dialog events, transaction event times and the accounting stream, on the in-process
bus (sipmesh.state.bus_memory), with UDP SIP peers and a scripted router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sipmesh.gen.sipmesh.v1 import events_pb2, router_pb2
from sipmesh.runtime.sections.accounting import ACCOUNTING_SUBJECTS
from sipmesh.sip import Request, parse_message
from sipmesh.state.bus import Message
from sipmesh.state.bus_memory import MemoryBus

from .conftest import FakeRouter, Peer, relay_to, request_text, start_edge, udp_port
from .test_cancels import next_method
from .test_media import answer, in_dialog

PeerFactory = Callable[[], Awaitable[Peer]]
State = events_pb2.DialogEvent


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, events_pb2.Envelope]] = []

    async def __call__(self, message: Message) -> None:
        self.events.append((message.subject, events_pb2.Envelope.FromString(message.data)))

    def dialog(self) -> list[tuple[str, events_pb2.DialogEvent]]:
        return [(s, e.dialog) for s, e in self.events if e.WhichOneof("event") == "dialog"]

    async def until(self, count: int) -> list[tuple[str, events_pb2.DialogEvent]]:
        for _ in range(100):
            if len(self.dialog()) >= count:
                break
            await asyncio.sleep(0.02)
        return self.dialog()


def in_dialog_router(callee: Peer, record_route: bool = True) -> FakeRouter:
    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        msg = parse_message(req.message.raw)
        assert isinstance(msg, Request)
        if msg.method == "INVITE":
            return relay_to(callee.port, record_route=record_route)
        return router_pb2.Decision(relay=router_pb2.Relay())

    return FakeRouter(decide)


async def test_answered_call_start_early_answer_end(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    bus = MemoryBus()
    recorder = Recorder()
    await bus.subscribe("sipmesh.dialog.>", recorder)
    edge = await start_edge(in_dialog_router(callee), bus=bus)
    try:
        port = udp_port(edge)
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="dlg-1"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 180), port)
        callee.send(answer(callee, invite, 200), port)
        responses = [await caller.next_response() for _ in range(3)]
        assert [r.status for r in responses] == [100, 180, 200]
        events = await recorder.until(3)
        assert [s for s, _ in events] == [
            "sipmesh.dialog.start",
            "sipmesh.dialog.early",
            "sipmesh.dialog.answer",
        ]
        start, early, answered = (e for _, e in events)
        assert start.state == State.STATE_START
        assert start.call_id == "dlg-1"
        assert start.from_tag == "a1"
        assert start.caller == "sip:alice@sipmesh.test"
        assert start.callee == "sip:bob@sipmesh.test"
        assert start.caller_address.port == caller.port
        assert (early.state, early.to_tag, early.status) == (State.STATE_EARLY, "uas1", 180)
        assert (answered.state, answered.status) == (State.STATE_ANSWER, 200)

        # The BYE (in the dialog, along the Record-Route) ends it.
        caller.send(in_dialog("BYE", caller, responses[2], 2), port)
        bye = await callee.next_request()
        callee.send(answer(callee, bye, 200), port)
        assert (await caller.next_response()).status == 200
        events = await recorder.until(4)
        subject, end = events[3]
        assert subject == "sipmesh.dialog.end"
        # The caller hung up (the BYE carries the INVITE's From tag).
        assert (end.state, end.reason, end.status) == (State.STATE_END, "bye caller", 200)
        assert end.caller == "sip:alice@sipmesh.test"
        ids = [env.id for _, env in recorder.events]
        assert len(set(ids)) == len(ids)  # accounting's idempotency keys
    finally:
        await edge.stop(0)
        await bus.close()


async def test_failed_and_cancelled_calls_end_with_reason(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    bus = MemoryBus()
    recorder = Recorder()
    await bus.subscribe("sipmesh.dialog.>", recorder)
    edge = await start_edge(in_dialog_router(callee), bus=bus)
    try:
        port = udp_port(edge)
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="dlg-2"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 486), port)
        events = await recorder.until(2)
        assert [e.state for _, e in events] == [State.STATE_START, State.STATE_END]
        assert (events[1][1].reason, events[1][1].status) == ("failure", 486)

        text = request_text(
            "INVITE", "sip:bob@sipmesh.test", caller.port, call_id="dlg-3", branch="z9hG4bKdlg3"
        )
        caller.send(text, port)
        invite = await callee.next_request()
        if invite.method == "ACK":  # of the 486 above
            invite = await callee.next_request()
        callee.send(answer(callee, invite, 180), port)
        await recorder.until(4)
        cancel = request_text(
            "CANCEL", "sip:bob@sipmesh.test", caller.port, call_id="dlg-3", branch="z9hG4bKdlg3"
        )
        caller.send(cancel, port)
        cancel_out = await next_method(callee, "CANCEL")  # past INVITE retransmissions
        callee.send(answer(callee, cancel_out, 200), port)
        callee.send(answer(callee, invite, 487), port)  # relayed (RFC 3261 §16.10)
        events = await recorder.until(5)
        end = events[4][1]
        assert (end.call_id, end.state, end.reason, end.status) == (
            "dlg-3",
            State.STATE_END,
            "cancel",
            487,
        )
    finally:
        await edge.stop(0)
        await bus.close()


async def test_no_dialog_events_without_record_route(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    bus = MemoryBus()
    recorder = Recorder()
    await bus.subscribe("sipmesh.>", recorder)
    edge = await start_edge(in_dialog_router(callee, record_route=False), bus=bus)
    try:
        port = udp_port(edge)
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="dlg-4"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 200), port)
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 200
        for _ in range(100):  # the transaction event shows the publishing happened
            if recorder.events:
                break
            await asyncio.sleep(0.02)
        assert [s for s, _ in recorder.events] == ["sipmesh.transaction.INVITE"]
    finally:
        await edge.stop(0)
        await bus.close()


async def test_transaction_events_kept_in_accounting_stream_with_wall_clock_times(
    udp_peers: PeerFactory,
) -> None:
    """The edge ensures the stream at start: events published before accounting ever
    consumed are delivered to its durable consumer, stamped with time.time()."""
    caller = await udp_peers()
    bus = MemoryBus()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(reply=router_pb2.Reply(code=200, reason="OK"))

    before = time.time()
    edge = await start_edge(
        FakeRouter(decide), bus=bus, event_streams=(("events", ACCOUNTING_SUBJECTS),)
    )
    got: list[events_pb2.Envelope] = []
    try:
        caller.send(request_text("MESSAGE", "sip:bob@sipmesh.test", caller.port), udp_port(edge))
        assert (await caller.next_response()).status == 200
        await asyncio.sleep(0.1)  # the fire-and-forget publish runs

        async def handler(message: Message) -> None:
            got.append(events_pb2.Envelope.FromString(message.data))

        sub = await bus.consume("events", "accounting", ACCOUNTING_SUBJECTS, handler)
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await sub.stop()
    finally:
        await edge.stop(0)
        await bus.close()
    assert len(got) == 1
    tx = got[0].transaction
    assert tx.method == "MESSAGE"
    # Wall-clock epoch seconds, not the loop's monotonic clock.
    assert before <= tx.started_at <= tx.finished_at <= time.time()
