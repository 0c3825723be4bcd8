"""``sipmesh serve --target accounting``: build the accounting service from the runtime."""

from __future__ import annotations

from sipmesh.accounting.service import AccountingService
from sipmesh.observe.wiring import Observability
from sipmesh.runtime.backends import BusModule, DbModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.lifecycle import Service


def create(runtime: Runtime) -> Service:
    return AccountingService(
        runtime.config.accounting,
        db=runtime.get("db", DbModule).db,
        # TracedBus: each event is handled in a CONSUMER span whose parent is the
        # context in its NATS headers, so the record joins the transaction's trace.
        bus=Observability.from_runtime(runtime).bus(runtime.get("bus", BusModule).bus),
        metrics=runtime.metrics,
        clock=runtime.clock,
    )
