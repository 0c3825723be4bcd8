"""Registration events between regions.

Outbound: every registration event of this region (the registrar's
``sipmesh.registration.<kind>`` on the region's own bus, i.e. inside its namespace)
is re-published unchanged on the shared inter-region subject
``<regions.subject>.<region>.registration.<kind>``, with this region's SIP address
in a header. The NATS leaf-node (or gateway) connection between the regions' NATS
servers carries that subject to the peers; nothing else of a region's namespace
needs to cross.

Inbound: the peers' events on ``<regions.subject>.*.registration.*`` are folded into
this region's remote index (sipmesh.regions.index).

Both subscriptions use queue groups, so with several registrar processes in a region
each event is handled once. Core NATS, not JetStream: an event published while the
regions are cut off is lost, and the index catches up with the user's next REGISTER
refresh (every binding is refreshed well within its expiry), while stale entries
expire with their bindings. Fire and forget, as every event (DESIGN.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.regions.index import RemoteIndex
from sipmesh.state.bus import EventBus, Message, Subscription
from sipmesh.state.errors import StateError

log = logging.getLogger("sipmesh.regions")

# What the registrar publishes on its own bus (services/registrar/events.py).
LOCAL_SUBJECT = "sipmesh.registration.*"
ADDRESS_HEADER = "Sipmesh-Region-Address"


class Replicator:
    """Copies local registration events out and indexes the peers' events."""

    def __init__(
        self,
        *,
        region: str,
        address: str,
        local: EventBus,
        shared: EventBus,
        index: RemoteIndex,
        peers: Sequence[str] = (),
    ) -> None:
        if not region:
            raise ValueError("regions.name must be set to replicate registrations")
        if not address:
            raise ValueError("regions.address must be set to replicate registrations")
        self.region = region
        self.address = address
        self._local = local
        self._shared = shared
        self._index = index
        self._peers = frozenset(peers)
        self._subs: list[Subscription] = []
        self.sent = 0
        self.indexed = 0
        self.ignored = 0

    async def start(self) -> None:
        self._subs.append(
            await self._local.subscribe(LOCAL_SUBJECT, self._outbound, queue="regions-out")
        )
        self._subs.append(
            await self._shared.subscribe(
                "*.registration.*", self._inbound, queue=f"regions-in-{self.region}"
            )
        )

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()

    async def _outbound(self, message: Message) -> None:
        kind = message.subject.rsplit(".", 1)[-1]
        try:
            await self._shared.publish(
                f"{self.region}.registration.{kind}",
                message.data,
                headers={ADDRESS_HEADER: self.address},
            )
            self.sent += 1
        except StateError as exc:
            log.warning("registration event not replicated: %s", exc)

    async def _inbound(self, message: Message) -> None:
        region = message.subject.split(".", 1)[0]
        address = message.headers.get(ADDRESS_HEADER, "")
        if region == self.region or (self._peers and region not in self._peers) or not address:
            self.ignored += 1
            return
        envelope = events_pb2.Envelope()
        try:
            envelope.ParseFromString(message.data)
        except Exception:  # a foreign or corrupt payload: not ours to crash on
            self.ignored += 1
            return
        if envelope.WhichOneof("event") != "registration":
            self.ignored += 1
            return
        try:
            if await self._index.apply(region, address, envelope.registration):
                self.indexed += 1
        except StateError as exc:
            log.warning("remote registration of %s not indexed: %s", region, exc)
