"""In-process event bus (the embedded default) with the semantics of NATS + JetStream.

Plain subscriptions get messages in order on their own task (like a NATS
subscription); queue groups hand each message to one member, round robin. Streams
keep the messages published on their subjects, and a durable consumer's position and
unacknowledged messages live with the stream, so a consumer that stops and starts
again under the same durable name carries on where it left off, with what it had not
acknowledged delivered again.

A stream forgets a message once every durable consumer of the stream has
acknowledged it, and keeps at most ``max_msgs`` (the oldest go first, as JetStream's
limits with DiscardOld): the edge publishes an event per transaction whether or not
anything consumes them, and a server that runs for weeks must not keep them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipmesh.state.bus import Handler, Message, Responder, Subscription, subject_matches
from sipmesh.state.errors import StateUnavailable

log = logging.getLogger(__name__)


@dataclass
class _Sub:
    pattern: str
    handler: Handler
    queue: str | None
    inbox: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    responder: Responder | None = None


@dataclass
class _Stored:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass
class _Pending:
    deliveries: int
    #: loop time after which the message is delivered again (0 = now).
    deadline: float
    in_flight: bool


@dataclass
class _Durable:
    subjects: list[str]
    next_seq: int = 1
    pending: dict[int, _Pending] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def floor(self) -> int:
        """The lowest sequence this consumer may still need."""
        return min(self.pending) if self.pending else self.next_seq


@dataclass
class _Stream:
    subjects: list[str]
    messages: dict[int, _Stored] = field(default_factory=dict)
    last_seq: int = 0
    #: The lowest sequence still kept (those below were dropped, see the docstring).
    first_seq: int = 1
    durables: dict[str, _Durable] = field(default_factory=dict)

    def trim(self, max_msgs: int) -> None:
        floor = self.last_seq - max_msgs + 1
        if self.durables:
            floor = max(floor, min(d.floor() for d in self.durables.values()))
        first, messages = self.first_seq, self.messages
        while first < floor:
            messages.pop(first, None)
            first += 1
        self.first_seq = first


class _Handle:
    """A subscription or consumer handle: stop() cancels its task."""

    def __init__(self, stop_cb: asyncio.Task[None], on_stop: list[_Sub] | None, bus: MemoryBus):
        self._task = stop_cb
        self._subs = on_stop
        self._bus = bus

    async def stop(self) -> None:
        if self._subs is not None:
            for sub in self._subs:
                if sub in self._bus._subs:
                    self._bus._subs.remove(sub)
        if self in self._bus._handles:
            self._bus._handles.remove(self)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class MemoryBus:
    """An EventBus inside one process."""

    def __init__(self, *, prefix: str = "", max_msgs: int = 100_000) -> None:
        if max_msgs < 1:
            raise ValueError("max_msgs must be positive")
        self._prefix = prefix
        self._max_msgs = max_msgs
        self._subs: list[_Sub] = []
        self._streams: dict[str, _Stream] = {}
        self._rr = itertools.count()
        self._closed = False
        self._handles: list[_Handle] = []

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def healthy(self) -> bool:
        return not self._closed

    async def ping(self) -> None:
        self._check()

    def _check(self) -> None:
        if self._closed:
            raise StateUnavailable("memory bus closed")

    async def close(self) -> None:
        for handle in list(self._handles):
            await handle.stop()
        self._closed = True

    # -- plain messages -----------------------------------------------------------

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self._check()
        msg = Message(subject, bytes(data), dict(headers or {}))
        self._dispatch(msg)
        self._store(msg)

    def _dispatch(self, msg: Message) -> None:
        groups: dict[str, list[_Sub]] = {}
        for sub in self._subs:
            if not subject_matches(sub.pattern, msg.subject):
                continue
            if sub.queue is None:
                sub.inbox.put_nowait(msg)
            else:
                groups.setdefault(sub.queue, []).append(sub)
        for members in groups.values():
            members[next(self._rr) % len(members)].inbox.put_nowait(msg)

    def _start(self, sub: _Sub) -> Subscription:
        async def run() -> None:
            while True:
                msg = await sub.inbox.get()
                if msg is None:
                    return
                try:
                    await sub.handler(msg)
                except Exception:
                    log.exception("handler for %s failed", msg.subject)

        sub.task = asyncio.get_running_loop().create_task(run())
        self._subs.append(sub)
        handle = _Handle(sub.task, [sub], self)
        self._handles.append(handle)
        return handle

    async def subscribe(
        self, subject: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        self._check()
        return self._start(_Sub(subject, handler, queue))

    async def respond(
        self, subject: str, responder: Responder, queue: str | None = None
    ) -> Subscription:
        self._check()

        async def ignore_reply(msg: Message) -> None:
            await responder(msg)

        return self._start(_Sub(subject, ignore_reply, queue, responder=responder))

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Message:
        self._check()
        responders = [
            s for s in self._subs if s.responder is not None and subject_matches(s.pattern, subject)
        ]
        if not responders:
            raise StateUnavailable(f"no responders on {subject!r}")
        chosen = responders[next(self._rr) % len(responders)]
        assert chosen.responder is not None
        msg = Message(subject, bytes(data), dict(headers or {}))
        try:
            async with asyncio.timeout(timeout):
                reply = await chosen.responder(msg)
        except TimeoutError as exc:
            raise StateUnavailable(f"no reply on {subject!r} within {timeout}s") from exc
        return Message(subject, reply)

    # -- streams and durable consumers ----------------------------------------------

    def _store(self, msg: Message) -> None:
        for stream in self._streams.values():
            if any(subject_matches(p, msg.subject) for p in stream.subjects):
                stream.last_seq += 1
                stream.messages[stream.last_seq] = _Stored(
                    stream.last_seq, msg.subject, msg.data, msg.headers
                )
                stream.trim(self._max_msgs)
                for durable in stream.durables.values():
                    durable.wakeup.set()

    async def ensure_stream(self, stream: str, subjects: Sequence[str]) -> None:
        self._check()
        existing = self._streams.get(stream)
        if existing is None:
            self._streams[stream] = _Stream(list(subjects))
        else:
            existing.subjects = sorted(set(existing.subjects) | set(subjects))

    async def delete_stream(self, stream: str) -> bool:
        self._check()
        gone = self._streams.pop(stream, None)
        if gone is not None:
            for durable in gone.durables.values():
                durable.wakeup.set()
        return gone is not None

    async def consume(
        self,
        stream: str,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        batch: int = 64,
    ) -> Subscription:
        self._check()
        await self.ensure_stream(stream, subjects)
        st = self._streams[stream]
        # A new durable starts at the oldest message the stream still has.
        state = st.durables.setdefault(durable, _Durable(list(subjects), next_seq=st.first_seq))
        loop = asyncio.get_running_loop()

        def take() -> _Stored | None:
            now = loop.time()
            # Redeliveries first (nak'ed, timed out, or left by a stopped consumer).
            for seq in sorted(state.pending):
                p = state.pending[seq]
                if not p.in_flight or p.deadline <= now:
                    stored = st.messages.get(seq)
                    if stored is None:
                        del state.pending[seq]
                        continue
                    if 0 <= max_deliver <= p.deliveries:
                        del state.pending[seq]  # delivered often enough: dropped
                        continue
                    if p.deadline > now:
                        continue
                    p.deliveries += 1
                    p.in_flight, p.deadline = True, now + ack_wait
                    return stored
            while state.next_seq <= st.last_seq:
                stored = st.messages.get(state.next_seq)
                state.next_seq += 1
                if stored is not None and any(
                    subject_matches(s, stored.subject) for s in state.subjects
                ):
                    state.pending[stored.seq] = _Pending(1, now + ack_wait, True)
                    return stored
            return None

        def next_deadline() -> float | None:
            deadlines = [p.deadline for p in state.pending.values()]
            return min(deadlines) - loop.time() if deadlines else None

        async def run() -> None:
            current: _Stored | None = None
            try:
                while True:
                    if self._streams.get(stream) is not st:
                        return
                    current = take()
                    if current is None:
                        state.wakeup.clear()
                        wait = next_deadline()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(None if wait is None else max(wait, 0.01)):
                                await state.wakeup.wait()
                        continue
                    p = state.pending[current.seq]
                    msg = Message(
                        current.subject,
                        current.data,
                        dict(current.headers),
                        p.deliveries,
                        current.seq,
                    )
                    try:
                        await handler(msg)
                    except Exception:
                        log.warning("durable %s: handler failed on seq %d", durable, current.seq)
                        # nak: deliver again soon (a short growing pause, so that a
                        # handler failing every time does not spin the loop).
                        backoff = min(0.005 * 2 ** min(p.deliveries, 8), ack_wait)
                        p.in_flight, p.deadline = False, loop.time() + backoff
                    else:
                        state.pending.pop(current.seq, None)  # ack
                    current = None
            finally:
                if current is not None and current.seq in state.pending:
                    # Stopped mid-message: not acknowledged, so delivered again.
                    pending = state.pending[current.seq]
                    pending.in_flight, pending.deadline = False, 0.0
                    state.wakeup.set()

        task = loop.create_task(run())
        handle = _Handle(task, None, self)
        self._handles.append(handle)
        return handle
