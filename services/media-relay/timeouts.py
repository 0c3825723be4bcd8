"""Media timeout: a call whose media stopped is deleted and announced on the bus.

rtpengine's ``timeout``: when no packet arrived on any stream of a call (and no
signalling touched it) for ``media_timeout`` seconds, the relay frees its ports and
publishes ``sipmesh.media.timeout`` (events.proto ``MediaTimeoutEvent``) so the
dialog can be torn down (BYE both ways) and accounted with reason "media-timeout".
Publishing is fire and forget (DESIGN.md, Performance): a bus that is down loses
the event, not the deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.media_relay.sessions import Session, SessionTable
from sipmesh.state.bus import EventBus
from sipmesh.state.errors import StateError

__all__ = ["SUBJECT", "MediaTimeouts", "timeout_envelope"]

log = logging.getLogger("sipmesh.media_relay")

SUBJECT = "sipmesh.media.timeout"


def timeout_envelope(
    session: Session, last_packet_at: float, *, relay: str, instance: str, now: float
) -> bytes:
    event = events_pb2.MediaTimeoutEvent(
        call_id=session.call_id,
        from_tag=session.from_tag,
        to_tag=session.to_tag,
        last_packet_at=last_packet_at,
        relay=relay,
    )
    envelope = events_pb2.Envelope(
        id=uuid.uuid4().hex,
        time=now,
        instance=instance,
        service="media-relay",
        media_timeout=event,
    )
    return envelope.SerializeToString()


class MediaTimeouts:
    """Sweeps the table every ``interval`` seconds; ``timeout`` 0 turns it off."""

    def __init__(
        self,
        table: SessionTable,
        bus: EventBus | None,
        *,
        timeout: float,
        relay_id: str,
        instance: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self._table = table
        self._bus = bus
        self._timeout = timeout
        self._relay_id = relay_id
        self._instance = instance
        self._clock = clock
        self._monotonic = monotonic
        self._interval = interval if interval is not None else max(0.05, min(1.0, timeout / 4))
        self._task: asyncio.Task[None] | None = None
        self.timed_out = 0  # sessions deleted by the timeout (metric)

    def start(self) -> None:
        if self._timeout > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="media-relay-timeouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def expired(self) -> list[tuple[Session, float]]:
        """Delete the sessions idle for longer than the timeout; (session, last packet
        wall time or 0 when none ever came)."""
        mono = self._monotonic()
        wall = self._clock()
        out: list[tuple[Session, float]] = []
        for session in self._table:
            if mono - session.last_activity() < self._timeout:
                continue
            last = max((s.last_packet for s in session.streams()), default=0.0)
            last_wall = wall - (mono - last) if last else 0.0
            self._table.delete(session.call_id)
            out.append((session, last_wall))
        return out

    async def sweep(self) -> int:
        gone = self.expired()
        for session, last_wall in gone:
            self.timed_out += 1
            if self._bus is None:
                continue
            data = timeout_envelope(
                session, last_wall, relay=self._relay_id, instance=self._instance, now=self._clock()
            )
            try:
                await self._bus.publish(SUBJECT, data)
            except StateError as exc:
                log.warning("media timeout of %s not published: %s", session.call_id, exc)
        return len(gone)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:  # a bug here must not stop the sweeps
                log.exception("media timeout sweep failed")
