"""What a service module's ``create(runtime)`` takes from telemetry, in one call.

``Observability.from_runtime(runtime)`` gives the process's span helpers, the
shared store-latency histogram, and wrappers for the stores and the bus; the edge
additionally builds its :class:`~sipmesh.observe.capture.SipCapture` with
:func:`edge_capture` (None when capture is not configured, so the transports do
no capture work at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import Histogram

from sipmesh.observe.capture import SipCapture
from sipmesh.observe.hep import parse_duplicate_uri
from sipmesh.observe.hep_sender import HepSender
from sipmesh.observe.instrument import instrument_store, store_latency, traced_bus
from sipmesh.observe.spans import Spans
from sipmesh.state.bus import EventBus
from sipmesh.state.kv import KVStore

if TYPE_CHECKING:
    from sipmesh.runtime.context import Runtime
    from sipmesh.state.db import Database

__all__ = ["Observability", "edge_capture"]

T = TypeVar("T")

KV_METHODS = ("get", "get_many", "set", "set_if_absent", "delete", "incr", "scan")
LOCATION_METHODS = ("get", "get_many", "update", "remove", "sweep", "list_aors", "count")


@dataclass(frozen=True)
class Observability:
    spans: Spans
    latency: Histogram | None

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> Observability:
        telemetry = runtime.config.telemetry
        latency = store_latency(runtime.metrics) if telemetry.store_latency else None
        return cls(Spans.from_runtime(runtime), latency)

    @classmethod
    def off(cls) -> Observability:
        return cls(Spans.off(), None)

    def store(self, store: T, *, name: str, system: str, methods: Sequence[str]) -> T:
        return instrument_store(
            store, name=name, system=system, methods=methods, spans=self.spans, latency=self.latency
        )

    def kv(self, store: KVStore, url: str) -> KVStore:
        return self.store(store, name="kv", system=_system(url), methods=KV_METHODS)

    def location(self, store: T, url: str) -> T:
        return self.store(store, name="location", system=_system(url), methods=LOCATION_METHODS)

    def bus(self, bus: EventBus) -> EventBus:
        return traced_bus(bus, self.spans, self.latency)


def _system(url: str) -> str:
    scheme = url.split(":", 1)[0].lower()
    return {"redis": "redis", "rediss": "redis", "memory": "memory"}.get(scheme, scheme or "memory")


async def _open_db(url: str) -> Database:
    from sipmesh.state.factory import open_db
    from sipmesh.state.schema import migrate

    db = await open_db(url)
    await migrate(db)
    return db


def edge_capture(runtime: Runtime, kv: KVStore | None) -> SipCapture | None:
    """The edge's capture, or None when neither HEP nor sip_trace is configured."""
    telemetry = runtime.config.telemetry
    if not telemetry.hep_destination and not telemetry.sip_trace_db:
        return None
    hep: HepSender | None = None
    if telemetry.hep_destination:
        transport, host, port = parse_duplicate_uri(telemetry.hep_destination)
        hep = HepSender(transport, host, port)
    db_url = runtime.config.db

    async def open_trace_db() -> Database:
        return await _open_db(db_url)

    return SipCapture(
        hep=hep,
        open_db=open_trace_db if telemetry.sip_trace_db else None,
        kv=kv,
        mode=telemetry.capture_mode,
        capture_id=telemetry.hep_capture_id,
        auth_key=telemetry.hep_auth_key,
        transaction_flag=telemetry.capture_transaction_flag,
        dialog_flag=telemetry.capture_dialog_flag,
        dialog_ttl=telemetry.capture_dialog_ttl,
        clock=runtime.clock,
    )
