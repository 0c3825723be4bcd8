"""``sipmesh serve --target presence``: build the presence service from the runtime."""

from __future__ import annotations

from functools import partial

from sipmesh.clients.grpc_servers import add_presence_servicer
from sipmesh.observe.wiring import Observability
from sipmesh.presence.service import PresenceService
from sipmesh.runtime.backends import BusModule, DbModule, KvModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.lifecycle import Service


def create(runtime: Runtime) -> Service:
    config = runtime.config
    # Spans, store latency and trace context in bus headers (sipmesh.observe).
    observe = Observability.from_runtime(runtime)
    service = PresenceService(
        config=config.presence,
        instance_id=config.instance_id,
        db=runtime.get("db", DbModule).db,
        kv=observe.kv(runtime.get("kv", KvModule).store, config.state),
        bus=observe.bus(runtime.get("bus", BusModule).bus),
        # The edge client is obtained in start() (SERVICE-GUIDE: never in create()).
        edge_factory=runtime.clients.edge,
        clock=runtime.clock,
        registry=runtime.metrics,
    )
    service.spans = observe.spans
    runtime.grpc_registrations.append(partial(add_presence_servicer, service=service))
    return service
