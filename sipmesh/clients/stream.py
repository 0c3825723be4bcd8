"""Batched bidirectional streams: the load-sharing client and the server side.

`BatchingStreamClient` resolves its target into backend addresses and keeps one
`BackendStream` (backend.py: correlation ids, adaptive micro-batching, deadlines,
fail-fast on a broken stream, reconnection with backoff) per backend. Each call goes
to the next healthy backend in round-robin order, so several instances of a service
share the load even though one HTTP/2 stream sticks to one server. The target is
re-resolved periodically; backends that appear join, backends that disappear are
closed once their pending calls are done, backends whose stream broke are skipped
until their stream is re-established.

`serve_batch_stream` is the server side: it runs the handler for every item of every
incoming batch concurrently (bounded), enforces each item's deadline, and writes the
answers back batched the same way (whatever finished since the last write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic

from sipmesh.clients.backend import (
    BackendStream,
    RepBatch,
    RepItem,
    ReqBatch,
    ReqItem,
    StreamOptions,
    StreamSpec,
    StreamState,
)
from sipmesh.clients.errors import Unavailable, error_to_proto
from sipmesh.clients.resolve import Resolver, target_resolver
from sipmesh.clients.tracing import attached

log = logging.getLogger(__name__)

__all__ = [
    "BatchingStreamClient",
    "StreamOptions",
    "StreamSpec",
    "StreamState",
    "serve_batch_stream",
]


class BatchingStreamClient(Generic[ReqItem, RepItem, ReqBatch, RepBatch]):
    """Round-robin over one batched stream per resolved backend of `target`."""

    def __init__(
        self,
        target: str,
        spec: StreamSpec[ReqItem, RepItem, ReqBatch, RepBatch],
        options: StreamOptions | None = None,
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self.target = target
        self._spec = spec
        self._options = options or StreamOptions()
        self._resolve = resolver or target_resolver(target)
        self._backends: dict[str, BackendStream[ReqItem, RepItem, ReqBatch, RepBatch]] = {}
        self._order: list[str] = []
        self._next = 0
        self._resolver_task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._state_changed = asyncio.Event()

    async def start(self) -> None:
        """Resolve the target and open a stream per backend (not waiting for them).

        A target that cannot be resolved now is retried in the background; calls
        fail with Unavailable meanwhile.
        """
        if self._resolver_task is not None:
            return
        try:
            await self._refresh()
        except Exception as exc:
            log.warning("cannot resolve %s yet: %s", self.target, exc)
        self._resolver_task = asyncio.create_task(
            self._resolve_loop(), name=f"resolve {self.target}"
        )

    async def close(self) -> None:
        self._closed = True
        if self._resolver_task is not None:
            self._resolver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resolver_task
        backends = list(self._backends.values())
        self._backends.clear()
        self._order.clear()
        await asyncio.gather(*(backend.close() for backend in backends))
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)

    async def __aenter__(self) -> BatchingStreamClient[ReqItem, RepItem, ReqBatch, RepBatch]:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- calls -------------------------------------------------------------------------

    async def call(self, item: ReqItem, timeout: float | None = None) -> RepItem:
        """Send one item and return its reply item (see BackendStream.call)."""
        backend = self._pick()
        return await backend.call(
            item, self._options.default_timeout if timeout is None else timeout
        )

    def _pick(self) -> BackendStream[ReqItem, RepItem, ReqBatch, RepBatch]:
        order = self._order
        count = len(order)
        connecting: BackendStream[ReqItem, RepItem, ReqBatch, RepBatch] | None = None
        for offset in range(count):
            index = (self._next + offset) % count
            backend = self._backends[order[index]]
            if backend.state is StreamState.READY:
                self._next = index + 1
                return backend
            if connecting is None and backend.state is StreamState.CONNECTING:
                connecting = backend
        if connecting is not None:
            # Nothing ready yet (start-up): queue on one that is still connecting;
            # its items go out as soon as it is up, or fail when it cannot connect.
            return connecting
        if self._closed:
            raise Unavailable(f"{self._spec.name}: client closed")
        states = ", ".join(
            f"{a} {b.state.value}: {b.last_error}" for a, b in self._backends.items()
        )
        states = states or "none resolved"
        raise Unavailable(f"{self._spec.name}: no backend of {self.target} available ({states})")

    # -- health and membership ---------------------------------------------------------------

    def backend_states(self) -> dict[str, StreamState]:
        return {address: backend.state for address, backend in self._backends.items()}

    def backend(self, address: str) -> BackendStream[ReqItem, RepItem, ReqBatch, RepBatch]:
        return self._backends[address]

    async def wait_ready(self, timeout: float, count: int = 1) -> None:
        """Wait until at least `count` backends have an open stream (TimeoutError).

        For start-up and tests; calls do not need it (they queue while connecting).
        """
        async with asyncio.timeout(timeout):
            while sum(b.state is StreamState.READY for b in self._backends.values()) < count:
                self._state_changed.clear()
                await self._state_changed.wait()

    async def refresh(self) -> None:
        """Re-resolve now (also done every `resolve_interval` seconds)."""
        await self._refresh()

    async def _resolve_loop(self) -> None:
        while True:
            # Without any backend (target not resolvable yet), retry sooner.
            interval = self._options.resolve_interval
            if not self._backends:
                interval = min(interval, self._options.backoff_max)
            await asyncio.sleep(interval)
            try:
                await self._refresh()
            except Exception as exc:  # keep the backends we have
                log.warning("re-resolving %s failed: %s", self.target, exc)

    async def _refresh(self) -> None:
        addresses = await self._resolve()
        if self._closed:
            return
        for address in addresses:
            if address not in self._backends:
                backend = BackendStream(address, self._spec, self._options, self._state_changed.set)
                self._backends[address] = backend
                backend.start()
        for address in list(self._backends):
            if address not in addresses:
                self._retire(self._backends.pop(address))
        self._order = list(addresses)

    def _retire(self, backend: BackendStream[ReqItem, RepItem, ReqBatch, RepBatch]) -> None:
        async def drain() -> None:
            # Let calls already sent finish (bounded by their deadlines), then close.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._options.default_timeout):
                    await backend.wait_idle()
            await backend.close()

        task = asyncio.create_task(drain(), name=f"retire {backend.address}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


# -- server side -----------------------------------------------------------------------


async def serve_batch_stream(
    request_iterator: AsyncIterator[ReqBatch],
    handler: Callable[[ReqItem], Awaitable[RepItem]],
    spec: StreamSpec[ReqItem, RepItem, ReqBatch, RepBatch],
    max_concurrency: int = 1024,
) -> AsyncIterator[RepBatch]:
    """Answer a batched stream: yields reply batches for a servicer to return.

    `handler` gets each request item and returns its reply item (the id is set
    here). It runs in the item's trace context, bounded by the item's deadline;
    an exception becomes the item's CallError. At most `max_concurrency` items run
    at once; beyond that the stream is not read further (HTTP/2 flow control pushes
    back on the caller).
    """
    outbox: list[RepItem] = []
    wakeup = asyncio.Event()
    slots = asyncio.Semaphore(max_concurrency)
    running: set[asyncio.Task[None]] = set()
    reading = True

    async def answer(item: ReqItem) -> None:
        cid = item.id
        try:
            with attached(item.trace_context):
                if item.deadline_ms:
                    async with asyncio.timeout(item.deadline_ms / 1000):
                        reply = await handler(item)
                else:
                    reply = await handler(item)
            reply.id = cid
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, TimeoutError):
                log.exception("%s: handler failed", spec.name)
            reply = spec.reply_error(cid, error_to_proto(exc))
        finally:
            slots.release()
            task = asyncio.current_task()
            if task is not None:
                running.discard(task)
        outbox.append(reply)
        wakeup.set()

    async def read() -> None:
        nonlocal reading
        try:
            async for batch in request_iterator:
                for item in spec.request_items(batch):
                    await slots.acquire()
                    task = asyncio.create_task(answer(item))
                    running.add(task)
        finally:
            reading = False
            wakeup.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            await wakeup.wait()
            wakeup.clear()
            if outbox:
                ready = outbox[:]
                outbox.clear()
                yield spec.reply_batch(ready)
            if not reading and not running and not outbox:
                break
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await asyncio.gather(*running, return_exceptions=True)
