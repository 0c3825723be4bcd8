"""``sipmesh serve --target accounting``: build the accounting service from the runtime."""

from __future__ import annotations

from sipmesh.accounting.service import AccountingService
from sipmesh.runtime.backends import BusModule, DbModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.lifecycle import Service


def create(runtime: Runtime) -> Service:
    return AccountingService(
        runtime.config.accounting,
        db=runtime.get("db", DbModule).db,
        bus=runtime.get("bus", BusModule).bus,
        metrics=runtime.metrics,
        clock=runtime.clock,
    )
