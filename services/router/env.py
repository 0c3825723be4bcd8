"""What a routing script's ``ctx`` may reach: the router's dependencies, read-only.

One ``RouterEnv`` is shared by every call; the tables, "myself" and feature
switches it holds are replaced as a whole on reload, never mutated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmesh.clients.interfaces import LocalRegistrar, PresenceClient, RegistrarClient
from sipmesh.gen.sipmesh.v1 import common_pb2
from sipmesh.regions.index import RemoteLookup
from sipmesh.router.cfgstore import CfgStore
from sipmesh.router.dialplan import Dialplan
from sipmesh.router.dispatcher import Dispatcher
from sipmesh.router.lcr import LcrTables
from sipmesh.router.resolve import Resolver, SimpleResolver
from sipmesh.router.tables import RoutingTables
from sipmesh.router.targets import Myself
from sipmesh.runtime.sections.router import RouterConfig, RouterFeatures

# Sends a request an edge must send (NOTIFY from presence); fire and forget.
OutboundSender = Callable[[common_pb2.OutboundRequest], Awaitable[None]]


@dataclass
class RouterEnv:
    settings: RouterConfig
    cfg: CfgStore
    # The effective "myself" (config names, listeners, domain table with
    # WITH_MULTIDOMAIN), recomputed by the service whenever the tables change.
    myself: Myself
    tables: RoutingTables = field(default_factory=RoutingTables)
    # Dispatcher sets and states (live object), LCR and dialplan snapshots (swapped
    # whole on reload, see datasets.py).
    dispatcher: Dispatcher = field(default_factory=Dispatcher)
    lcr: LcrTables = field(default_factory=LcrTables)
    dialplan: Dialplan = field(default_factory=Dialplan)
    registrar: RegistrarClient | None = None
    presence: PresenceClient | None = None
    resolver: Resolver = field(default_factory=SimpleResolver)
    outbound: OutboundSender | None = None
    # Multi-region (issue 12): peers' registrations, consulted on a local lookup miss.
    regions: RemoteLookup | None = None
    region: str = ""
    # Timeout of one call to another service from the script (registrar, presence).
    call_timeout: float = 1.0
    # Fire-and-forget tasks (NOTIFYs handed to edges), kept referenced until done.
    background: set[asyncio.Task[None]] = field(default_factory=set)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("sipmesh.router.script"))
    _local_checked: object = field(default=None, init=False, repr=False, compare=False)
    _local: bool = field(default=False, init=False, repr=False, compare=False)

    def registrar_is_local(self) -> bool:
        """The registrar runs in this process (LocalRegistrar): asked once per client,
        as a Protocol isinstance check costs ~10 µs, per REGISTER otherwise."""
        registrar = self.registrar
        if self._local_checked is not registrar:
            self._local = isinstance(registrar, LocalRegistrar)
            self._local_checked = registrar
        return self._local

    @property
    def features(self) -> RouterFeatures:
        return self.settings.features
