"""The runtime context handed to every module factory.

It carries the configuration, the process's metrics registry and tracer, and the
services started so far, so a factory receives its dependencies instead of reaching
for globals.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry

from sipmesh.runtime.config import SipmeshConfig
from sipmesh.runtime.lifecycle import Service

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from sipmesh.runtime.modules import ModuleManager

T = TypeVar("T")

GrpcRegistration = Callable[[Any], None]


class Runtime:
    def __init__(
        self,
        config: SipmeshConfig,
        manager: ModuleManager,
        *,
        metrics: CollectorRegistry | None = None,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.manager = manager
        self.metrics = metrics if metrics is not None else CollectorRegistry(auto_describe=True)
        self.tracer = tracer
        self.clock = clock
        self.started_at = clock()
        self._services: dict[str, Service] = {}
        # Servicers to add to the gRPC server before it starts: (server) -> None.
        self.grpc_registrations: list[GrpcRegistration] = []
        from sipmesh.runtime.wiring import Clients

        self.clients = Clients(self)

    def register(self, name: str, service: Service) -> None:
        self._services[name] = service

    def has(self, name: str) -> bool:
        return name in self._services

    def get(self, name: str, kind: type[T]) -> T:
        """The started module ``name``, checked to be a ``kind``."""
        service = self._services.get(name)
        if service is None:
            raise LookupError(f"module {name!r} is not running in this process")
        if not isinstance(service, kind):
            raise TypeError(f"module {name!r} is a {type(service).__name__}, not {kind.__name__}")
        return service

    def local_targets(self) -> tuple[str, ...]:
        return self.config.targets()

    async def close(self) -> None:
        """Release what the runtime itself holds (clients to other services)."""
        await self.clients.close()
