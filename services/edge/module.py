"""``sipmesh serve --target edge``: build the EdgeService from the runtime."""

from __future__ import annotations

import importlib
from typing import Any

from sipmesh.clients.interfaces import EdgeClient, RouterClient
from sipmesh.edge.transport.base import MessageSink
from sipmesh.edge.transport.manager import TransportManager
from sipmesh.runtime.backends import BusModule, KvModule
from sipmesh.runtime.context import Runtime

from .service import EdgeService, Transports

__all__ = ["create"]


def _router_client(runtime: Runtime) -> RouterClient:
    """The router: sipmesh.runtime.wiring when it exists, else the local service object.

    Resolved when the edge starts (the router, a soft dependency, starts first when
    it runs in this process).
    """
    try:
        wiring: Any = importlib.import_module("sipmesh.runtime.wiring")
    except ModuleNotFoundError:
        wiring = None
    if wiring is not None and hasattr(wiring, "router_client"):
        client: RouterClient = wiring.router_client(runtime)
        return client
    return runtime.get("router", RouterClient)  # type: ignore[type-abstract]


def _edge_peers(runtime: Runtime) -> Any:
    """edge_id -> EdgeClient for handing a branch to the edge owning a flow."""
    try:
        wiring: Any = importlib.import_module("sipmesh.runtime.wiring")
    except ModuleNotFoundError:
        return None
    factory = getattr(wiring, "edge_client", None)
    if factory is None:
        return None
    client: EdgeClient = factory(runtime)
    return lambda edge_id: client


def create(runtime: Runtime) -> EdgeService:
    config = runtime.config
    kv = runtime.get("kv", KvModule).store
    bus = runtime.get("bus", BusModule).bus

    def transports(sink: MessageSink) -> Transports:
        return TransportManager(
            config.listen, sink, config.edge, clock=runtime.clock, metrics=runtime.metrics
        )

    service = EdgeService(
        config,
        router=lambda: _router_client(runtime),
        kv=kv,
        bus=bus,
        transports=transports,
        metrics=runtime.metrics,
        peers=_edge_peers(runtime),
        clock=runtime.clock,
    )
    _register_grpc(runtime, service)
    return service


def _register_grpc(runtime: Runtime, service: EdgeService) -> None:
    """Expose Edge.Send/Info (other edges hand us branches for flows we own)."""
    from sipmesh.clients.grpc_servers import add_edge_servicer

    runtime.grpc_registrations.append(lambda server: add_edge_servicer(server, service))
