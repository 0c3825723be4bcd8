"""The ``regions`` runtime module: the remote index and, when configured, the replicator.

Planned under the registrar (which publishes the events the replicator forwards) and
the router (which reads the index). It opens its own connection to NATS for the
shared inter-region subject: the region's bus is confined to its namespace.
With ``regions.replicate`` off it holds only the (then always empty) index lookup
and connects to nothing.
"""

from __future__ import annotations

from sipmesh.regions.index import RemoteIndex
from sipmesh.regions.replicator import Replicator
from sipmesh.runtime.backends import BusModule, KvModule
from sipmesh.runtime.context import Runtime
from sipmesh.state.bus import EventBus


class RegionsModule:
    name = "regions"

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._config = runtime.config
        self.index: RemoteIndex | None = None
        self.replicator: Replicator | None = None
        self._shared: EventBus | None = None

    @property
    def enabled(self) -> bool:
        return self._config.regions.replicate

    async def start(self) -> None:
        settings = self._config.regions
        if not settings.replicate:
            return
        kv = self._runtime.get("kv", KvModule).store
        self.index = RemoteIndex(kv, clock=self._runtime.clock)
        if "registrar" not in self._runtime.local_targets():
            return  # the router only reads the index
        from sipmesh.state.factory import open_bus

        local = self._runtime.get("bus", BusModule).bus
        self._shared = await open_bus(self._config.bus, prefix=settings.subject)
        self.replicator = Replicator(
            region=settings.name,
            address=settings.sip_address(),
            local=local,
            shared=self._shared,
            index=self.index,
            peers=settings.peers,
        )
        await self.replicator.start()

    async def stop(self, grace: float) -> None:
        if self.replicator is not None:
            await self.replicator.stop()
        if self._shared is not None:
            await self._shared.close()

    def ready(self) -> bool:
        # The shared connection reconnects by itself; a peer region that is gone must
        # not make this region's registrar or router unready.
        return True
