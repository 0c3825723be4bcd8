"""Span helpers: nothing when off; edge span attributes; continuing a trace from a SIP header."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sipmesh.observe.spans import Spans, network_transport
from sipmesh.runtime.sections import TelemetryConfig
from sipmesh.runtime.telemetry import make_tracer_provider
from sipmesh.sip import Request, parse_message

HEADER = "X-Sipmesh-Traceparent"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def invite(extra: str = "") -> Request:
    raw = (
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: span-1@x\r\n"
        f"CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def test_off_creates_no_span() -> None:
    spans = Spans.off()
    assert spans.transaction(invite(), "udp", ("192.0.2.1", 5060)) is None
    with spans.decision(1, "c", "INVITE") as span:
        assert span is None


def test_no_exporter_means_no_recording() -> None:
    provider = make_tracer_provider(TelemetryConfig(), service="edge", instance="e1")
    span = provider.get_tracer("t").start_span("x")
    assert not span.is_recording()


def test_edge_span_continues_the_trace_of_the_sip_header_and_parents_the_decision() -> None:
    exporter = InMemorySpanExporter()
    provider = make_tracer_provider(
        TelemetryConfig(), service="edge", instance="e1", exporter=exporter
    )
    spans = Spans(provider.get_tracer("t"), sip_header=HEADER)
    span = spans.transaction(
        invite(f"{HEADER}: {PARENT}\r\n"), "tls", ("192.0.2.1", 5061), ("10.0.0.1", 5061)
    )
    assert span is not None
    with Spans.current(span), spans.decision(1, "span-1@x", "INVITE"):
        header = spans.traceparent()
    Spans.end_transaction(span, 486)
    decision, edge = exporter.get_finished_spans()
    assert format(edge.context.trace_id, "032x") == PARENT.split("-")[1]
    assert edge.parent is not None
    assert format(edge.parent.span_id, "016x") == PARENT.split("-")[2]
    assert decision.parent is not None
    assert decision.parent.span_id == edge.context.span_id
    assert header.split("-")[1] == PARENT.split("-")[1]
    assert dict(edge.attributes or {}) == {
        "sip.method": "INVITE",
        "sip.call_id": "span-1@x",
        "network.transport": "tcp",
        "sip.transport": "tls",
        "network.peer.address": "192.0.2.1",
        "network.peer.port": 5061,
        "server.address": "10.0.0.1",
        "server.port": 5061,
        "sip.status_code": 486,
    }
    assert network_transport("sctp") == "sctp"
