"""``sipmesh serve --target edge``: build the EdgeService from the runtime."""

from __future__ import annotations

from sipmesh.edge.transport.base import MessageSink
from sipmesh.edge.transport.manager import TransportManager
from sipmesh.runtime.backends import BusModule, KvModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.wiring import EdgeAnnouncer, advertised_grpc_address

from .service import EdgeService, Transports

__all__ = ["create"]


def create(runtime: Runtime) -> EdgeService:
    config = runtime.config
    kv = runtime.get("kv", KvModule).store
    bus = runtime.get("bus", BusModule).bus

    def transports(sink: MessageSink) -> Transports:
        return TransportManager(
            config.listen, sink, config.edge, clock=runtime.clock, metrics=runtime.metrics
        )

    # Other components reach the flows this edge owns through its gRPC Edge.Send, so
    # the edge announces where that is (only one instance owns a flow, DESIGN.md 4).
    announcer = EdgeAnnouncer(
        runtime.clients.edge_directory(),
        config.instance_id,
        advertised_grpc_address(config.grpc, config.grpc_advertise),
    )
    service = EdgeService(
        config,
        # Resolved at start: the router (a soft dependency) has started by then when
        # it runs in this process; otherwise this is the gRPC stream client.
        router=runtime.clients.router,
        kv=kv,
        bus=bus,
        transports=transports,
        metrics=runtime.metrics,
        peers=runtime.clients.edge,
        announcer=announcer,
        clock=runtime.clock,
    )
    _register_grpc(runtime, service)
    return service


def _register_grpc(runtime: Runtime, service: EdgeService) -> None:
    """Expose Edge.Send/Info (other edges hand us branches for flows we own)."""
    from sipmesh.clients.grpc_servers import add_edge_servicer

    runtime.grpc_registrations.append(lambda server: add_edge_servicer(server, service))
