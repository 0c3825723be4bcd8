"""Tracing and logging setup, and the helpers that carry trace context across hops.

The tracer provider is created per process and passed to the services (no global
provider is installed), so tests can run several runtimes side by side with their
own in-memory exporters. Context crosses gRPC stream items and NATS messages as W3C
``traceparent``/``tracestate`` entries of a plain string map.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sipmesh import __version__
from sipmesh.runtime.sections import TelemetryConfig

_PROPAGATOR = TraceContextTextMapPropagator()


def make_tracer_provider(
    config: TelemetryConfig,
    *,
    service: str,
    instance: str,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A provider for this process; ``exporter`` overrides the configured one (tests)."""
    resource = Resource.create(
        {
            "service.name": f"sipmesh-{service}",
            "service.instance.id": instance,
            "service.version": __version__,
        }
    )
    # No exporter: record nothing (ALWAYS_OFF), so spans cost no more than the
    # no-op API; the services also skip creating them (sipmesh.observe.spans.Spans).
    sampler: Sampler = ALWAYS_OFF
    if exporter is not None or config.exporter != "none":
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    processor: SpanProcessor | None = None
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter)
    elif config.exporter == "console":
        processor = BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    elif config.exporter == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint or None))
    elif config.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        processor = BatchSpanProcessor(HttpExporter(endpoint=config.otlp_endpoint or None))
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def inject_context(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context into ``carrier`` (gRPC item map, NATS headers)."""
    _PROPAGATOR.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    """The context a remote hop sent, to start child spans under."""
    return _PROPAGATOR.extract(dict(carrier))


class _TraceFilter(logging.Filter):
    """Puts the active trace id (or '-') and the process facts on every record."""

    def __init__(self, service: str, instance: str) -> None:
        super().__init__()
        self._service = service
        self._instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span()
        ctx = span.get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else "-"
        record.service = self._service
        record.instance = self._instance
        if not hasattr(record, "call_id"):
            record.call_id = "-"
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "service": getattr(record, "service", "-"),
            "instance": getattr(record, "instance", "-"),
            "trace_id": getattr(record, "trace_id", "-"),
            "call_id": getattr(record, "call_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(config: TelemetryConfig, *, service: str, instance: str) -> None:
    """Structured logs on stderr with service, instance, Call-ID and trace id."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_TraceFilter(service, instance))
    if config.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(service)s %(instance)s "
                "trace=%(trace_id)s call=%(call_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_log_level(config.log_level)


def set_log_level(level: str) -> None:
    """Change the level at run time (Kamailio's debug level, through the admin API)."""
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("sipmesh").setLevel(level.upper())
