"""Spans and latency around the shared-store and bus operations a service makes.

The services are handed these wrappers instead of the raw store/bus objects when
telemetry asks for it (``telemetry.store_latency`` or a span exporter); with both
off, the module factory passes the raw object and nothing here runs.

- :func:`instrument_store` wraps a KVStore / LocationStore (or anything with async
  methods): each listed call is timed into ``sipmesh_store_operation_seconds{store,
  operation}`` and, when a span is recording, runs in a CLIENT span
  ``<store> <operation>`` with ``db.system``.
- :class:`TracedBus` wraps an EventBus: ``publish`` carries the current trace
  context in the message headers (``traceparent``, W3C Trace Context) inside a
  PRODUCER span; handlers of ``subscribe``/``consume`` run in a CONSUMER span whose
  parent is the publisher's context, so a bus hop stays in the transaction's trace.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Histogram

from sipmesh.observe.spans import Spans
from sipmesh.observe.stats import histogram, shared
from sipmesh.state.bus import EventBus, Handler, Message, Responder, Subscription

__all__ = ["TracedBus", "instrument_store", "store_latency"]

T = TypeVar("T")
_PROPAGATOR = TraceContextTextMapPropagator()


def store_latency(registry: CollectorRegistry) -> Histogram:
    """The process-wide ``sipmesh_store_operation_seconds`` histogram."""
    existing = shared(registry, "store_operation_seconds")
    if isinstance(existing, Histogram):
        return existing
    return histogram(
        registry,
        "store_operation_seconds",
        "shared-store and bus operations by store and operation (latency)",
        ["store", "operation"],
    )


class _Instrumented:
    """Forwards every attribute to ``inner``; listed async methods are measured."""

    def __init__(
        self,
        inner: object,
        store: str,
        system: str,
        methods: frozenset[str],
        spans: Spans,
        latency: Histogram | None,
    ) -> None:
        self._inner = inner
        self._store = store
        self._system = system
        self._methods = methods
        self._spans = spans
        self._latency = latency

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._methods or not callable(attr):
            return attr
        wrapped = self._wrap(name, attr)
        # Cached on the instance: later look-ups no longer reach __getattr__.
        setattr(self, name, wrapped)
        return wrapped

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        spans = self._spans
        observe = self._latency.labels(self._store, name).observe if self._latency else None
        span_name = f"{self._store} {name}"
        attributes = {"db.system": self._system, "db.operation.name": name}

        async def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                if spans.enabled and trace.get_current_span().is_recording():
                    with spans.call(span_name, kind=SpanKind.CLIENT, attributes=attributes):
                        return await fn(*args, **kwargs)
                return await fn(*args, **kwargs)
            finally:
                if observe is not None:
                    observe(time.perf_counter() - started)

        return call


def instrument_store(
    store: T,
    *,
    name: str,
    system: str,
    methods: Sequence[str],
    spans: Spans,
    latency: Histogram | None,
) -> T:
    """``store`` with spans and latency on ``methods``; ``store`` itself when both are off."""
    if not spans.enabled and latency is None:
        return store
    return cast(T, _Instrumented(store, name, system, frozenset(methods), spans, latency))


class TracedBus:
    """An EventBus that carries the trace context in message headers."""

    def __init__(self, inner: EventBus, spans: Spans, latency: Histogram | None = None) -> None:
        self._inner = inner
        self._spans = spans
        self._publish_latency = latency.labels("bus", "publish") if latency is not None else None

    @property
    def prefix(self) -> str:
        return self._inner.prefix

    @property
    def healthy(self) -> bool:
        return self._inner.healthy

    async def ping(self) -> None:
        await self._inner.ping()

    async def close(self) -> None:
        await self._inner.close()

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        started = time.perf_counter()
        try:
            # A sampled context, not only a recording span: the edge publishes a
            # transaction's events once its span has ended (after the final
            # response), and they still belong to that trace.
            if (
                self._spans.enabled
                and trace.get_current_span().get_span_context().trace_flags.sampled
            ):
                with self._spans.call(
                    f"{subject} publish",
                    kind=SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.destination.name": subject,
                        "messaging.operation.type": "publish",
                    },
                ):
                    carrier = dict(headers or {})
                    _PROPAGATOR.inject(carrier)
                    await self._inner.publish(subject, data, carrier)
                    return
            await self._inner.publish(subject, data, headers)
        finally:
            if self._publish_latency is not None:
                self._publish_latency.observe(time.perf_counter() - started)

    def _traced(self, handler: Handler) -> Handler:
        spans = self._spans
        if not spans.enabled:
            return handler

        async def traced(message: Message) -> None:
            if "traceparent" not in message.headers:
                await handler(message)
                return
            token = otel_context.attach(_PROPAGATOR.extract(message.headers))
            try:
                with spans.call(
                    f"{message.subject} process",
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "messaging.system": "nats",
                        "messaging.destination.name": message.subject,
                        "messaging.operation.type": "process",
                    },
                ):
                    await handler(message)
            finally:
                otel_context.detach(token)

        return traced

    async def subscribe(
        self, subject: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        return await self._inner.subscribe(subject, self._traced(handler), queue)

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Message:
        carrier = dict(headers or {})
        if self._spans.enabled:
            _PROPAGATOR.inject(carrier)
        return await self._inner.request(subject, data, timeout, carrier or None)

    async def respond(
        self, subject: str, responder: Responder, queue: str | None = None
    ) -> Subscription:
        return await self._inner.respond(subject, responder, queue)

    async def ensure_stream(self, stream: str, subjects: Sequence[str]) -> None:
        await self._inner.ensure_stream(stream, subjects)

    async def delete_stream(self, stream: str) -> bool:
        return await self._inner.delete_stream(stream)

    async def consume(
        self,
        stream: str,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        batch: int = 64,
    ) -> Subscription:
        return await self._inner.consume(
            stream,
            durable,
            subjects,
            self._traced(handler),
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            batch=batch,
        )


def traced_bus(bus: EventBus, spans: Spans, latency: Histogram | None = None) -> EventBus:
    """``bus`` carrying trace context (itself when neither tracing nor latency is on)."""
    if not spans.enabled and latency is None:
        return bus
    return TracedBus(bus, spans, latency)
