"""``sipmesh serve --target media-relay``: build the MediaRelayService from the runtime.

The relay depends on the bus (media timeout events) and the gRPC server (the
MediaRelay contract, served by sipmesh.clients' adapter over this object); the ng
listener for stock Kamailio/OpenSIPS rtpengine modules is opened at start when
``media_relay.ng_listen`` is set.
"""

from __future__ import annotations

from typing import Any

from sipmesh.clients.grpc_servers import add_media_relay_servicer
from sipmesh.media_relay.service import MediaRelayService
from sipmesh.observe.spans import Spans
from sipmesh.runtime.backends import BusModule
from sipmesh.runtime.context import Runtime


def create(runtime: Runtime) -> MediaRelayService:
    config = runtime.config
    bus = runtime.get("bus", BusModule).bus
    service = MediaRelayService(
        config.media_relay,
        bus=bus,
        metrics=runtime.metrics,
        relay_id=config.media_relay.relay_id or config.instance_id,
        instance=config.instance_id,
        clock=runtime.clock,
    )

    service.spans = Spans.from_runtime(runtime)

    def register(server: Any) -> None:
        add_media_relay_servicer(server, service)

    runtime.grpc_registrations.append(register)
    return service
