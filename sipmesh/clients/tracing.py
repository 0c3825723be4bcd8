"""Trace context across gRPC calls (DESIGN.md principle 8: one SIP transaction, one trace).

Unary calls carry the W3C trace context in gRPC metadata. Items of the batched
streams carry it in their own `trace_context` map, because stream metadata is sent
once for the whole (long-lived) stream and belongs to no single request.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate


def inject_trace(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context (traceparent, tracestate) into `carrier`."""
    propagate.inject(carrier)


def extract_trace(carrier: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(carrier)


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata for a unary call carrying the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())


def metadata_to_carrier(metadata: Iterable[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """gRPC invocation metadata as a carrier (binary -bin entries skipped)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key] = value
    return carrier


@contextmanager
def attached(carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the body in the trace context found in `carrier` (no-op when it is empty)."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
