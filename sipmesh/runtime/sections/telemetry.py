"""Telemetry: tracing exporter and sampling, logging, SIP capture (HEP v3 / sip_trace).

See docs/observability.md for what each setting does and its Kamailio counterpart.
"""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class TelemetryConfig(Section):
    exporter: Literal["none", "console", "otlp-grpc", "otlp-http"] = Field(
        "none",
        description="where spans go: none (no span is recorded at all), console, otlp-grpc "
        "or otlp-http",
    )
    otlp_endpoint: str = Field(
        "",
        description="collector address for the OTLP exporters (e.g. http://collector:4317 for "
        "otlp-grpc, http://collector:4318/v1/traces for otlp-http); empty: the exporter's default",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of traces kept (a trace started upstream keeps its parent's choice)",
    )
    sip_trace_header: str = Field(
        "",
        description="SIP header carrying the W3C traceparent between sipmesh instances "
        "(e.g. X-Sipmesh-Traceparent, regions); empty: none is read or added",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level (changeable at run time through the admin API)"
    )
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    store_latency: bool = Field(
        True,
        description="measure shared-store and bus operations of the services "
        "(sipmesh_store_operation_seconds)",
    )

    # --- SIP capture (Kamailio's siptrace module) ------------------------------------
    hep_destination: str = Field(
        "",
        description="HEP capture server as siptrace's duplicate_uri, e.g. sip:10.0.0.5:9060 or "
        "sip:homer:9060;transport=tcp; empty: no HEP mirroring",
    )
    hep_capture_id: int = Field(
        1, ge=0, le=0xFFFFFFFF, description="HEP capture agent id (siptrace's hep_capture_id)"
    )
    hep_auth_key: str = Field(
        "", description="HEP authentication key chunk (siptrace's auth_key); empty: not sent"
    )
    capture_mode: Literal["off", "all", "flagged"] = Field(
        "all",
        description="what is captured when a destination or sip_trace_db is set: all "
        "messages, only flagged transactions/dialogs, or nothing (changeable at run time)",
    )
    capture_transaction_flag: int = Field(
        22,
        ge=0,
        le=31,
        description="transaction flag a routing script sets to capture the transaction "
        "(sip_trace_mode('t'))",
    )
    capture_dialog_flag: int = Field(
        23,
        ge=0,
        le=31,
        description="transaction flag a routing script sets to capture the whole dialog "
        "(sip_trace_mode('d'))",
    )
    capture_dialog_ttl: float = Field(
        7200.0, gt=0, description="seconds a captured dialog is followed without a BYE"
    )
    sip_trace_db: bool = Field(
        False, description="also store captured messages in the sip_trace table (siptrace db_url)"
    )
