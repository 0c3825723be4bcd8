"""Accounting: acc, missed calls, CDRs (services/accounting, docs/accounting.md)."""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section

#: The subjects of the accounting stream (events.proto header): the accounting
#: consumer reads them, and the edge ensures the stream holds them from its start.
ACCOUNTING_SUBJECTS: tuple[str, ...] = ("sipmesh.transaction.>", "sipmesh.dialog.>")


class AccountingConfig(Section):
    dialog_timeout: int = Field(
        43200, ge=60, description="seconds after which a call with no BYE is closed"
    )
    sweep_interval: float = Field(
        30.0, gt=0, description="seconds between two dialog-timeout sweeps of open CDRs"
    )
    stream: str = Field(
        "events",
        min_length=1,
        description="JetStream stream holding sipmesh.transaction.> and sipmesh.dialog.>",
    )
    durable: str = Field(
        "accounting",
        min_length=1,
        description="durable consumer name; instances with the same name share the events",
    )
    workers: int = Field(
        4, ge=1, le=64, description="concurrent pull loops (database transactions) per instance"
    )
    fetch_batch: int = Field(64, ge=1, le=1024, description="events fetched per pull")
    ack_wait: float = Field(
        30.0, gt=1, description="seconds before an unacknowledged event is delivered again"
    )
    retry_initial: float = Field(
        0.2, gt=0, description="first pause (s) before retrying an event the database refused"
    )
    retry_max: float = Field(
        5.0, gt=0, description="longest pause (s) between retries while the database is down"
    )
    processed_retention: float = Field(
        604800.0,
        gt=0,
        description="seconds the idempotency keys (events_processed) are kept",
    )
    jsonl_path: str = Field(
        "", description="also append every record to this JSON-lines file (empty: off)"
    )
    syslog_address: str = Field(
        "", description="also send every record to syslog: /dev/log or HOST:PORT (empty: off)"
    )
    syslog_facility: Literal[
        "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7", "user"
    ] = Field("local0", description="syslog facility of the records (acc's log_facility)")
