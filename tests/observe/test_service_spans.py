"""Spans of the presence, media-relay and accounting services (sipmesh.observe).

With tracing on, each call runs in a SERVER span that is a child of the caller's
context (the router's decision span, carried in gRPC metadata when split), and the
accounting consumer's span joins the trace of the transaction whose event it
records through the ``traceparent`` of the bus message — even though the edge
publishes that event after the transaction's span has ended. With tracing off,
nothing is recorded and no trace context is put into the bus headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from sipmesh.accounting.service import AccountingService
from sipmesh.accounting.testing import call_events
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2, presence_pb2
from sipmesh.media_relay.service import MediaRelayService
from sipmesh.observe.instrument import TracedBus
from sipmesh.observe.spans import Spans
from sipmesh.presence.service import PresenceService
from sipmesh.runtime.sections import TelemetryConfig
from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.runtime.telemetry import make_tracer_provider
from sipmesh.state.bus import Message
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.db import Database
from sipmesh.state.kv_memory import MemoryKV
from tests.accounting.helpers import count, migrated, wait_for
from tests.edge.conftest import Peer, request_text, start_edge, udp_peers, udp_port
from tests.edge.test_dialogs import in_dialog_router
from tests.edge.test_media import answer
from tests.media_relay.conftest import relay_config, sdp

Key = media_relay_pb2.MediaSessionKey
__all__ = ["udp_peers"]  # the edge suite's fixture, used here too


def tracing(service: str) -> tuple[Spans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider(
        TelemetryConfig(), service=service, instance=f"{service}-1", exporter=exporter
    )
    return Spans(provider.get_tracer("test")), exporter


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        span.parent is not None
        and span.parent.span_id == parent.context.span_id
        and span.context.trace_id == parent.context.trace_id
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await migrated(f"sqlite:///{tmp_path / 'spans.sqlite'}")
    yield database
    await database.close()


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelayService]:
    service = MediaRelayService(relay_config())
    await service.start()
    yield service
    await service.stop(0)


async def test_media_relay_offer_answer_delete_are_children_of_the_caller(
    relay: MediaRelayService,
) -> None:
    spans, exporter = tracing("media-relay")
    relay.spans = spans
    with spans.call("route request", kind=SpanKind.SERVER):
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="sp-1", from_tag="ft"),
                sdp=sdp("127.0.0.1", 40000),
                flags=["trust-address"],
            )
        )
        await relay.answer(
            media_relay_pb2.AnswerRequest(
                key=Key(call_id="sp-1", from_tag="ft", to_tag="tt"),
                sdp=sdp("127.0.0.1", 40002),
                flags=["trust-address"],
            )
        )
        await relay.delete(media_relay_pb2.DeleteRequest(key=Key(call_id="sp-1")))
    *calls, route = exporter.get_finished_spans()
    assert [s.name for s in calls] == [
        "media_relay.offer",
        "media_relay.answer",
        "media_relay.delete",
    ]
    for span in calls:
        assert child_of(span, route)
        assert span.kind == SpanKind.SERVER
        assert dict(span.attributes or {}) == {"sip.call_id": "sp-1"}


async def test_media_relay_without_tracing_records_nothing(relay: MediaRelayService) -> None:
    _, exporter = tracing("media-relay")
    assert not relay.spans.enabled  # the class default: Spans.off()
    reply = await relay.offer(
        media_relay_pb2.OfferRequest(
            key=Key(call_id="sp-2", from_tag="ft"), sdp=sdp("127.0.0.1", 40004)
        )
    )
    assert b"m=audio" in reply.sdp
    assert exporter.get_finished_spans() == ()


async def test_presence_handle_span_carries_method_and_status(db: Database) -> None:
    spans, exporter = tracing("presence")
    service = PresenceService(
        config=PresenceConfig(), instance_id="pres-1", db=db, kv=MemoryKV(), bus=MemoryBus()
    )
    service.spans = spans
    raw = (
        b"OPTIONS sip:bob@sipmesh.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKpres1\r\n"
        b"From: <sip:alice@sipmesh.test>;tag=1\r\nTo: <sip:bob@sipmesh.test>\r\n"
        b"Call-ID: pres-span-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    request = presence_pb2.HandleRequest(message=common_pb2.SipMessage(raw=raw))
    with spans.call("route request", kind=SpanKind.SERVER):
        reply = await service.handle(request)
    assert reply.response.code == 405
    handle, route = exporter.get_finished_spans()
    assert handle.name == "presence.handle"
    assert child_of(handle, route)
    assert dict(handle.attributes or {}) == {
        "sip.method": "OPTIONS",
        "sip.call_id": "pres-span-1",
        "sip.status_code": 405,
    }

    service.spans = Spans.off()
    exporter.clear()
    assert (await service.handle(request)).response.code == 405
    assert exporter.get_finished_spans() == ()


async def test_accounting_consumer_span_joins_the_transaction_trace(db: Database) -> None:
    edge_spans, edge_exporter = tracing("edge")
    acc_spans, acc_exporter = tracing("accounting")
    inner = MemoryBus()
    seen: list[Message] = []

    async def headers(message: Message) -> None:
        seen.append(message)

    await inner.subscribe("sipmesh.transaction.>", headers)
    service = AccountingService(
        AccountingConfig(), db=db, bus=TracedBus(inner, acc_spans), metrics=CollectorRegistry()
    )
    edge_bus = TracedBus(inner, edge_spans)
    await service.start()
    try:
        await inner.ensure_stream("events", ["sipmesh.transaction.>", "sipmesh.dialog.>"])
        (invite,) = call_events("busy", "acc-span-1", 1_700_000_000.0)
        # As the edge does: the transaction's span ends with the final response, the
        # event is published afterwards, in that span's context.
        with edge_spans.call("SIP INVITE", kind=SpanKind.SERVER):
            pass
        (transaction,) = edge_exporter.get_finished_spans()
        token = otel_context.attach(
            trace.set_span_in_context(trace.NonRecordingSpan(transaction.context))
        )
        try:
            await edge_bus.publish("sipmesh.transaction.INVITE", invite.SerializeToString())
        finally:
            otel_context.detach(token)

        async def recorded() -> bool:
            return await count(db, "missed_calls") == 1

        await wait_for(recorded, timeout=10)
    finally:
        await service.stop(1.0)
    publish = next(s for s in edge_exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER)
    assert child_of(publish, transaction)
    assert seen[0].headers["traceparent"].split("-")[2] == format(publish.context.span_id, "016x")
    (process,) = acc_exporter.get_finished_spans()
    assert process.name == "sipmesh.transaction.INVITE process"
    assert process.kind == SpanKind.CONSUMER
    assert child_of(process, publish)


async def test_bus_without_tracing_carries_no_trace_context() -> None:
    inner = MemoryBus()
    seen: list[Message] = []

    async def headers(message: Message) -> None:
        seen.append(message)

    await inner.subscribe("sipmesh.dialog.>", headers)
    spans, exporter = tracing("edge")
    off = TracedBus(inner, Spans(spans.tracer, enabled=False))
    with spans.call("SIP INVITE", kind=SpanKind.SERVER):
        await off.publish("sipmesh.dialog.start", b"x")

    async def delivered() -> bool:
        return bool(seen)

    await wait_for(delivered, timeout=5)
    assert seen[0].headers == {}
    assert [s.name for s in exporter.get_finished_spans()] == ["SIP INVITE"]


async def test_edge_events_carry_the_transaction_trace(
    udp_peers: Callable[[], Awaitable[Peer]],
) -> None:
    """The edge publishes the INVITE's transaction and dialog events after its span
    ended; every one still carries that trace to the bus (and so to accounting)."""
    spans, exporter = tracing("edge")
    inner = MemoryBus()
    seen: list[Message] = []

    async def record(message: Message) -> None:
        seen.append(message)

    await inner.subscribe("sipmesh.>", record)
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(in_dialog_router(callee), bus=TracedBus(inner, spans))
    assert edge.core is not None
    edge._spans = edge.core.spans = spans  # what Observability.from_runtime gives the edge
    try:
        port = udp_port(edge)
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="tr-1"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 486), port)

        async def published() -> bool:
            return len(seen) >= 3

        await wait_for(published, timeout=5)
    finally:
        await edge.stop(0)
    sip = next(s for s in exporter.get_finished_spans() if s.name == "SIP INVITE")
    trace_id = format(sip.context.trace_id, "032x")
    subjects = sorted(m.subject for m in seen)
    assert subjects == ["sipmesh.dialog.end", "sipmesh.dialog.start", "sipmesh.transaction.INVITE"]
    assert {m.headers["traceparent"].split("-")[1] for m in seen} == {trace_id}
