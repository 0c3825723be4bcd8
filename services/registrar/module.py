"""``sipmesh serve --target registrar``: build the registrar from the runtime."""

from __future__ import annotations

from functools import partial

from sipmesh.clients.grpc_servers import add_registrar_servicer
from sipmesh.observe.wiring import Observability
from sipmesh.registrar.api import Registrar
from sipmesh.runtime.backends import BusModule, DbModule, KvModule, LocationModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.lifecycle import Service


def create(runtime: Runtime) -> Service:
    config = runtime.config
    # Store/bus latency, spans and trace context in bus headers (sipmesh.observe).
    observe = Observability.from_runtime(runtime)
    service = Registrar(
        config=config.registrar,
        domains=config.domains,
        instance_id=config.instance_id,
        store=observe.location(runtime.get("location", LocationModule).store, config.state),
        kv=observe.kv(runtime.get("kv", KvModule).store, config.state),
        db=runtime.get("db", DbModule).db,
        bus=observe.bus(runtime.get("bus", BusModule).bus),
        registry=runtime.metrics,
        clock=runtime.clock,
    )
    service.spans = observe.spans
    runtime.grpc_registrations.append(partial(add_registrar_servicer, service=service))
    return service
