"""``sipmesh serve --target edge``: build the EdgeService from the runtime."""

from __future__ import annotations

from sipmesh.edge.transport.base import MessageSink
from sipmesh.edge.transport.manager import TransportManager
from sipmesh.observe.capture import CaptureSink
from sipmesh.observe.wiring import Observability, edge_capture
from sipmesh.runtime.backends import BusModule, KvModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.sections.accounting import ACCOUNTING_SUBJECTS
from sipmesh.runtime.wiring import EdgeAnnouncer, advertised_grpc_address

from .service import EdgeService, Transports

__all__ = ["create"]


def create(runtime: Runtime) -> EdgeService:
    config = runtime.config
    observe = Observability.from_runtime(runtime)
    kv = observe.kv(runtime.get("kv", KvModule).store, config.state)
    bus = observe.bus(runtime.get("bus", BusModule).bus)
    # SIP capture at the transport boundary; None (no work) unless configured.
    capture = edge_capture(runtime, kv)

    def transports(sink: MessageSink) -> Transports:
        manager = TransportManager(
            config.listen,
            sink if capture is None else CaptureSink(sink, capture),
            config.edge,
            clock=runtime.clock,
            metrics=runtime.metrics,
        )
        if capture is not None:
            manager.mirror = capture.sent
        return manager

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
        spans=observe.spans,
        capture=capture,
        # NATMANAGE's relay: the local service, or the gRPC client of
        # endpoints.media_relay (relay chosen per Call-ID); None when neither exists.
        media_relay=(
            runtime.clients.media_relay if runtime.clients.is_available("media-relay") else None
        ),
        # Accounting's durable stream exists from the edge's start on, so calls made
        # before accounting first runs are recorded too.
        event_streams=((config.accounting.stream, ACCOUNTING_SUBJECTS),),
    )
    _register_grpc(runtime, service)
    return service


def _register_grpc(runtime: Runtime, service: EdgeService) -> None:
    """Expose Edge.Send/Info (other edges hand us branches for flows we own)."""
    from sipmesh.clients.grpc_servers import add_edge_servicer

    runtime.grpc_registrations.append(lambda server: add_edge_servicer(server, service))
