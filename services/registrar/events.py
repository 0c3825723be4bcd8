"""Binding events on the bus: ``sipmesh.registration.<added|refreshed|removed|expired>``.

Payload: the events.proto ``Envelope`` with a ``RegistrationEvent`` (presence reg
events and offline-message delivery consume them). Publishing is fire and forget
(DESIGN.md, Performance); a bus that is down loses the event, not the REGISTER.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.registrar.convert import binding_to_pb
from sipmesh.registrar.core import Change, ChangeKind
from sipmesh.state.bus import EventBus
from sipmesh.state.errors import StateError

log = logging.getLogger("sipmesh.registrar")

SUBJECT_PREFIX = "sipmesh.registration."

KIND_PB = {
    ChangeKind.ADDED: events_pb2.RegistrationEvent.KIND_ADDED,
    ChangeKind.REFRESHED: events_pb2.RegistrationEvent.KIND_REFRESHED,
    ChangeKind.REMOVED: events_pb2.RegistrationEvent.KIND_REMOVED,
    ChangeKind.EXPIRED: events_pb2.RegistrationEvent.KIND_EXPIRED,
}


def subject(kind: ChangeKind) -> str:
    return SUBJECT_PREFIX + kind.value


def envelope(change: Change, contacts: int, *, instance: str, now: float) -> bytes:
    event = events_pb2.RegistrationEvent(
        kind=KIND_PB[change.kind], binding=binding_to_pb(change.binding), contacts=contacts
    )
    env = events_pb2.Envelope(
        id=uuid.uuid4().hex, time=now, instance=instance, service="registrar", registration=event
    )
    return env.SerializeToString()


class EventPublisher:
    def __init__(self, bus: EventBus, instance: str) -> None:
        self._bus = bus
        self._instance = instance

    async def publish(
        self, changes: Sequence[Change], contacts_after: dict[str, int], now: float
    ) -> None:
        for change in changes:
            data = envelope(
                change,
                contacts_after.get(change.binding.aor, 0),
                instance=self._instance,
                now=now,
            )
            try:
                await self._bus.publish(subject(change.kind), data)
            except StateError as exc:
                log.warning("registration event not published: %s", exc)
