"""OpenTelemetry spans of a SIP transaction across services (DESIGN.md principle 8).

One SIP transaction is one trace:

- the edge opens a SERVER span when a new server transaction starts (RFC 3261
  §17.2) and ends it with the final response; its attributes follow OpenTelemetry's
  semantic conventions where they exist (``network.transport``,
  ``network.peer.address``/``.port``, ``server.address``/``.port``) plus
  ``sip.method``, ``sip.call_id``, ``sip.status_code``;
- the routing call runs with that span current, so the batched gRPC stream item
  carries its ``traceparent`` (sipmesh.clients.tracing) and the router's decision
  span is its child; the registrar, presence and media-relay calls the routing
  script makes are children of the decision span, and so on down to the store and
  bus operations.

Cost when tracing is off (``telemetry.exporter: none``): :class:`Spans` is built
with ``enabled=False`` and every helper returns at its first line — no span object,
no id generation, no attribute dictionaries on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from sipmesh.runtime.context import Runtime
    from sipmesh.sip import Request

__all__ = ["Spans", "network_transport"]

_PROPAGATOR = TraceContextTextMapPropagator()
_ROUTE_KINDS = {0: "request", 1: "request", 2: "branch", 3: "reply", 4: "failure"}


def network_transport(transport: str) -> str:
    """OpenTelemetry's ``network.transport`` (OSI layer 4) of a SIP transport."""
    lower = transport.lower()
    if lower == "udp":
        return "udp"
    if lower == "sctp":
        return "sctp"
    return "tcp"  # tcp, tls, ws, wss all run over TCP


class Spans:
    """The span helpers of one process, over its own tracer (never a global one)."""

    def __init__(
        self, tracer: Tracer | None, *, enabled: bool = True, sip_header: str = ""
    ) -> None:
        self.tracer = tracer
        self.enabled = enabled and tracer is not None
        self.sip_header = sip_header.strip()

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> Spans:
        telemetry = runtime.config.telemetry
        return cls(
            runtime.tracer,
            enabled=telemetry.exporter != "none",
            sip_header=telemetry.sip_trace_header,
        )

    @classmethod
    def off(cls) -> Spans:
        return cls(None, enabled=False)

    # -- edge: one span per server transaction ---------------------------------------
    def transaction(
        self,
        request: Request,
        transport: str,
        peer: tuple[str, int],
        local: tuple[str, int] | None = None,
    ) -> Span | None:
        """Start the edge's SERVER span of a new transaction (None when tracing is off).

        When ``telemetry.sip_trace_header`` names a header and the request carries
        one (another sipmesh region sent it), the span continues that trace.
        """
        if not self.enabled:
            return None
        assert self.tracer is not None
        parent: otel_context.Context = otel_context.Context()
        if self.sip_header:
            value = request.get(self.sip_header)
            if value:
                parent = _PROPAGATOR.extract({"traceparent": value.strip()})
        attributes: dict[str, Any] = {
            "sip.method": request.method,
            "sip.call_id": request.get("Call-ID") or "",
            "network.transport": network_transport(transport),
            "network.peer.address": peer[0],
            "network.peer.port": peer[1],
            "sip.transport": transport.lower(),
        }
        if local is not None:
            attributes["server.address"] = local[0]
            attributes["server.port"] = local[1]
        return self.tracer.start_span(
            f"SIP {request.method}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    @staticmethod
    def end_transaction(span: Span | None, status: int) -> None:
        """End the transaction's span with its final status (0: dropped, no answer)."""
        if span is None or not span.is_recording():
            return
        if status:
            span.set_attribute("sip.status_code", status)
        if status >= 500 or status == 0:
            span.set_status(Status(StatusCode.ERROR, f"SIP {status}" if status else "dropped"))
        span.end()

    @staticmethod
    @contextmanager
    def current(span: Span | None) -> Iterator[None]:
        """Make ``span`` current (e.g. while creating the task that calls the router)."""
        if span is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)

    # -- router: the decision span ----------------------------------------------------
    @contextmanager
    def decision(self, kind: int, call_id: str = "", method: str = "") -> Iterator[Span | None]:
        """The router's span around one routing call (child of the edge's span)."""
        if not self.enabled:
            yield None
            return
        assert self.tracer is not None
        name = f"route {_ROUTE_KINDS.get(kind, 'request')}"
        attributes: dict[str, Any] = {"sip.route.kind": _ROUTE_KINDS.get(kind, "request")}
        if method:
            attributes["sip.method"] = method
        if call_id:
            attributes["sip.call_id"] = call_id
        with self.tracer.start_as_current_span(
            name, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def traceparent(self) -> str:
        """The current span's ``traceparent`` (for the inter-region SIP header)."""
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent", "")

    # -- service calls, store and bus operations ----------------------------------------
    @contextmanager
    def call(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Iterator[Span | None]:
        """A span around one call (registrar.register, location get, bus publish...)."""
        if not self.enabled:
            yield None
            return
        assert self.tracer is not None
        with self.tracer.start_as_current_span(
            name, kind=kind, attributes=dict(attributes or {})
        ) as span:
            yield span
