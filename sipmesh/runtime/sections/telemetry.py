"""Telemetry: tracing exporter, sampling, logging."""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class TelemetryConfig(Section):
    exporter: Literal["none", "console", "otlp-grpc", "otlp-http"] = Field(
        "none", description="where spans go: none, console, otlp-grpc or otlp-http"
    )
    otlp_endpoint: str = Field("", description="collector address for the OTLP exporters")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of traces kept")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level (changeable at run time through the admin API)"
    )
    log_format: Literal["text", "json"] = Field("text", description="log line format")
