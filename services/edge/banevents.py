"""Bans announced on the bus, learned by every edge at once (issue 4, item 3).

The anti-flood sync (antiflood.py) reads back only the ban keys of sources an edge
has seen lately, so without this the first requests of a source banned elsewhere
would be served by an edge that never saw it, until its next sync after them. Every
edge therefore subscribes to the ban events (events.proto ``BanEvent``) and drops
a banned source from the moment the event arrives:

``sipmesh.ban.added`` / ``sipmesh.ban.removed`` (the subjects of events.proto),
published by the edges' anti-flood check and by the admin API for ``sipmesh ctl ban``.

Events are fire and forget: one that is lost is made up by the periodic sync.
No subscription uses a queue group: every edge instance must see every ban.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import DecodeError

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.state.bus import EventBus, Message, Subscription

from .antiflood import AntiFlood

__all__ = ["BAN_SUBJECTS", "BanEvents"]

log = logging.getLogger("sipmesh.edge.antiflood")

BAN_SUBJECTS = ("sipmesh.ban.*",)
_Kind = events_pb2.BanEvent


class BanEvents:
    def __init__(
        self,
        bus: EventBus,
        flood: AntiFlood,
        *,
        instance_id: str,
        on_learned: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._bus = bus
        self._flood = flood
        self._instance = instance_id
        self._on_learned = on_learned
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        for subject in BAN_SUBJECTS:
            self._subs.append(await self._bus.subscribe(subject, self.handle))

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.stop()
            except Exception as exc:  # the bus may already be gone at shutdown
                log.debug("ban subscription not stopped: %s", exc)

    async def handle(self, message: Message) -> None:
        try:
            envelope = events_pb2.Envelope.FromString(message.data)
        except DecodeError:
            log.debug("undecodable ban event on %s", message.subject)
            return
        if envelope.WhichOneof("event") != "ban" or not envelope.ban.ip:
            return
        ban = envelope.ban
        if ban.kind == _Kind.KIND_ADDED:
            if envelope.instance == self._instance and envelope.service == "edge":
                return  # our own ban, taken locally already
            # expires_at is wall-clock epoch seconds, the anti-flood clock's too.
            self._flood.learn_ban(ban.ip, ban.expires_at or None)
            added = True
        elif ban.kind == _Kind.KIND_REMOVED:
            self._flood.learn_lift(ban.ip)
            added = False
        else:
            return
        if self._on_learned is not None:
            self._on_learned(ban.ip, added)
