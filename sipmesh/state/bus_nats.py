"""Event bus on NATS, durable consumption on JetStream.

The client reconnects by itself forever (nats-py reconnect loop, 0.5 s apart plus
jitter) and restores its subscriptions; ``healthy`` follows the connection. While it
is disconnected, operations raise ``StateUnavailable`` at once instead of being
buffered without bound, so a caller learns that an event was not sent.

Durable consumers are JetStream pull consumers with explicit acks: several processes
using the same durable name share the messages; a message is acked after its handler
returns, nak'ed when it raises, and left unacknowledged when the consumer stops or the
process dies, so JetStream delivers it again (after ``ack_wait``) to whichever
consumer of that durable name fetches next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from sipmesh.state.bus import (
    Handler,
    Message,
    Responder,
    Subscription,
    stream_name,
    subject_matches,
)
from sipmesh.state.errors import StateUnavailable

log = logging.getLogger(__name__)

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoRespondersError,
    OSError,
    TimeoutError,
)

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (*_UNAVAILABLE, nats.errors.Error)
_SETTLE_ERRORS: tuple[type[BaseException], ...] = (*_UNAVAILABLE, nats.errors.MsgAlreadyAckdError)


class _SubHandle:
    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def stop(self) -> None:
        with contextlib.suppress(*_UNAVAILABLE, nats.errors.BadSubscriptionError):
            await self._sub.unsubscribe()


class _ConsumerHandle:
    def __init__(self, task: asyncio.Task[None], psub: Any) -> None:
        self._task = task
        self._psub = psub

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(*_UNAVAILABLE, nats.errors.BadSubscriptionError):
            await self._psub.unsubscribe()


class NatsBus:
    """An EventBus on a NATS server with JetStream."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        prefix: str,
        op_timeout: float,
        stream_max_age: float | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=op_timeout)
        self._prefix = prefix
        self._op_timeout = op_timeout
        # JetStream keeps a stream's messages until a limit says otherwise, acknowledged
        # or not: without one the events of every transaction fill the server's disk.
        self._max_age = stream_max_age
        self._consumers: list[_ConsumerHandle] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        prefix: str = "",
        op_timeout: float = 2.0,
        name: str = "sipmesh",
        stream_max_age: float | None = None,
    ) -> NatsBus:
        async def on_error(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        servers = [s.strip() for s in url.split(",") if s.strip()]
        try:
            async with asyncio.timeout(op_timeout * 2):
                nc = await nats.connect(
                    servers=servers,
                    name=name,
                    connect_timeout=op_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    error_cb=on_error,
                )
        except _CONNECT_ERRORS as exc:
            raise StateUnavailable(f"nats unavailable at {url}: {exc}") from exc
        return cls(nc, prefix=prefix, op_timeout=op_timeout, stream_max_age=stream_max_age)

    # -- names ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self._prefix

    def _full(self, subject: str) -> str:
        return f"{self._prefix}.{subject}" if self._prefix else subject

    def _short(self, subject: str) -> str:
        if self._prefix and subject.startswith(self._prefix + "."):
            return subject[len(self._prefix) + 1 :]
        return subject

    def _message(self, msg: Msg) -> Message:
        return Message(self._short(msg.subject), msg.data, dict(msg.headers or {}))

    # -- health -----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return bool(self._nc.is_connected)

    def _check(self) -> None:
        if not self._nc.is_connected:
            state = "closed" if self._nc.is_closed else "reconnecting"
            raise StateUnavailable(f"nats {state}")

    async def _bounded(self, coro: Any) -> Any:
        try:
            async with asyncio.timeout(self._op_timeout):
                return await coro
        except _UNAVAILABLE as exc:
            raise StateUnavailable(f"nats: {exc or type(exc).__name__}") from exc

    async def ping(self) -> None:
        self._check()
        await self._bounded(self._nc.flush(timeout=max(1, round(self._op_timeout))))

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        if not self._nc.is_closed:
            with contextlib.suppress(*_UNAVAILABLE):
                async with asyncio.timeout(self._op_timeout):
                    await self._nc.close()

    # -- plain messages ---------------------------------------------------------------

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self._check()
        await self._bounded(self._nc.publish(self._full(subject), data, headers=headers))

    async def subscribe(
        self, subject: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        self._check()

        async def cb(msg: Msg) -> None:
            try:
                await handler(self._message(msg))
            except Exception:
                log.exception("handler for %s failed", msg.subject)

        sub = await self._bounded(self._nc.subscribe(self._full(subject), queue=queue or "", cb=cb))
        return _SubHandle(sub)

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Message:
        self._check()
        try:
            reply = await self._nc.request(
                self._full(subject), data, timeout=timeout, headers=headers
            )
        except _UNAVAILABLE as exc:
            raise StateUnavailable(f"no reply on {subject!r}: {exc or type(exc).__name__}") from exc
        return Message(subject, reply.data, dict(reply.headers or {}))

    async def respond(
        self, subject: str, responder: Responder, queue: str | None = None
    ) -> Subscription:
        self._check()

        async def cb(msg: Msg) -> None:
            try:
                answer = await responder(self._message(msg))
            except Exception:
                log.exception("responder for %s failed", msg.subject)
                return
            if msg.reply:
                with contextlib.suppress(*_UNAVAILABLE):
                    await msg.respond(answer)

        sub = await self._bounded(self._nc.subscribe(self._full(subject), queue=queue or "", cb=cb))
        return _SubHandle(sub)

    # -- JetStream --------------------------------------------------------------------

    async def ensure_stream(self, stream: str, subjects: Sequence[str]) -> None:
        self._check()
        name = stream_name(self._prefix, stream)
        wanted = [self._full(s) for s in subjects]
        for _ in range(3):
            try:
                info = await self._bounded(self._js.stream_info(name))
            except nats.js.errors.NotFoundError:
                try:
                    await self._bounded(
                        self._js.add_stream(
                            name=name,
                            subjects=wanted,
                            storage=api.StorageType.FILE,
                            max_age=self._max_age,
                        )
                    )
                    return
                except nats.js.errors.BadRequestError:
                    continue  # created concurrently: read it and update
            current = list(info.config.subjects or [])
            age = info.config.max_age or None
            if set(wanted) <= set(current) and (self._max_age is None or age == self._max_age):
                return
            config = info.config.evolve(
                subjects=sorted(set(current) | set(wanted)),
                max_age=self._max_age if self._max_age is not None else info.config.max_age,
            )
            await self._bounded(self._js.update_stream(config))
            return
        raise StateUnavailable(f"could not create or update stream {name}")

    async def delete_stream(self, stream: str) -> bool:
        self._check()
        try:
            return bool(
                await self._bounded(self._js.delete_stream(stream_name(self._prefix, stream)))
            )
        except nats.js.errors.NotFoundError:
            return False

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
        await self.ensure_stream(stream, subjects)
        name = stream_name(self._prefix, stream)
        wanted = [self._full(s) for s in subjects]
        config = api.ConsumerConfig(
            durable_name=durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            # nats-server 2.9 filters on one subject; with several, the consumer takes
            # the whole stream and the loop below skips (and acks) the others.
            filter_subject=wanted[0] if len(wanted) == 1 else None,
        )
        try:
            await self._bounded(self._js.add_consumer(name, config))
        except nats.js.errors.BadRequestError as exc:
            # Exists with another configuration (e.g. an older ack_wait): use it as is.
            log.info("durable %s on %s kept as configured: %s", durable, name, exc)
        psub = await self._bounded(self._js.pull_subscribe_bind(durable=durable, stream=name))
        patterns = list(subjects)

        async def run() -> None:
            delay = 0.05
            while True:
                try:
                    msgs = await psub.fetch(batch, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                except _UNAVAILABLE as exc:
                    log.debug("durable %s: fetch failed (%s); retrying", durable, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                for index, msg in enumerate(msgs):
                    meta = msg.metadata
                    short = self._short(msg.subject)
                    if not any(subject_matches(p, short) for p in patterns):
                        await _settle(msg.ack())
                        continue
                    event = Message(
                        short,
                        msg.data,
                        dict(msg.headers or {}),
                        int(meta.num_delivered),
                        int(meta.sequence.stream),
                    )
                    try:
                        await handler(event)
                    except asyncio.CancelledError:
                        # Stopping: give back what was fetched but not handled, so it
                        # goes to another consumer now rather than after ack_wait.
                        for left in msgs[index + 1 :]:
                            await _settle(left.nak())
                        raise
                    except Exception:
                        log.warning(
                            "durable %s: handler failed on seq %s", durable, meta.sequence.stream
                        )
                        await _settle(msg.nak())
                    else:
                        await _settle(msg.ack())

        task = asyncio.get_running_loop().create_task(run())
        handle = _ConsumerHandle(task, psub)
        self._consumers.append(handle)
        return handle


async def _settle(coro: Any) -> None:
    """Ack/nak, best effort: a lost ack only means the message comes again."""
    try:
        async with asyncio.timeout(2.0):
            await coro
    except _SETTLE_ERRORS as exc:
        log.debug("ack/nak not sent: %s", exc)
