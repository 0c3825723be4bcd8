"""One long-lived batched bidirectional stream to one backend address.

The hot-path calls between services (edge -> router, router -> registrar ...) are
never one unary RPC per SIP message (DESIGN.md, Performance: ~44 µs against
~460 µs). Each caller keeps one stream per backend; `call()` queues an item with a
correlation id and a future; the writer task packs everything queued since its last
write into one batch message — a batch of one when idle, larger batches under load,
never waiting on a timer to fill a batch; the reader task resolves the futures by
id. A broken stream fails every pending call at once with `Unavailable` and is
re-opened with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import grpc

from sipmesh.clients.errors import DeadlineExceeded, Unavailable, error_from_proto
from sipmesh.clients.tracing import inject_trace
from sipmesh.gen.sipmesh.v1 import common_pb2

log = logging.getLogger(__name__)


class StreamItem(Protocol):
    """A request item of a batched stream (RouteItem, RegistrarItem, ...)."""

    id: int
    deadline_ms: int

    @property
    def trace_context(self) -> MutableMapping[str, str]: ...


class ReplyItem(Protocol):
    """A reply item: `id` plus a `result` oneof that may hold a CallError `error`."""

    id: int

    @property
    def error(self) -> common_pb2.CallError: ...

    def WhichOneof(self, oneof_group: Literal["result"]) -> str | None: ...


ReqItem = TypeVar("ReqItem", bound=StreamItem)
RepItem = TypeVar("RepItem", bound=ReplyItem)
ReqBatch = TypeVar("ReqBatch")
RepBatch = TypeVar("RepBatch")


@dataclass(frozen=True, slots=True)
class StreamSpec(Generic[ReqItem, RepItem, ReqBatch, RepBatch]):
    """How to speak one batched stream RPC; both ends use the same spec."""

    # "sipmesh.v1.Router/Route", for errors and logs.
    name: str
    # Opens the stream call on a channel: `lambda ch: RouterStub(ch).Route()`.
    open: Callable[[grpc.aio.Channel], Any]
    request_batch: Callable[[list[ReqItem]], ReqBatch]
    request_items: Callable[[ReqBatch], Sequence[ReqItem]]
    reply_batch: Callable[[list[RepItem]], RepBatch]
    reply_items: Callable[[RepBatch], Sequence[RepItem]]
    # Builds the reply item that carries an error for the request with this id.
    reply_error: Callable[[int, common_pb2.CallError], RepItem]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Tuning of the batched stream clients (defaults fit a LAN/loopback)."""

    # Deadline used when a call gives none (a call never waits forever).
    default_timeout: float = 5.0
    # Waiting for the HTTP/2 connection before a stream is opened.
    connect_timeout: float = 2.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    # Items per batch message at most (the rest go in the next write).
    max_batch: int = 512
    # Re-resolution of the target (new instances join, removed ones leave).
    resolve_interval: float = 30.0
    channel_options: tuple[tuple[str, Any], ...] = ()


def channel_options(options: StreamOptions) -> list[tuple[str, Any]]:
    # gRPC's own reconnect backoff starts at 1 s and grows to 2 min; keep it in line
    # with ours so a restarted backend is found again quickly.
    base: dict[str, Any] = {
        "grpc.initial_reconnect_backoff_ms": max(1, int(options.backoff_initial * 1000)),
        "grpc.min_reconnect_backoff_ms": max(1, int(options.backoff_initial * 1000)),
        "grpc.max_reconnect_backoff_ms": max(1, int(options.backoff_max * 1000)),
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
        "grpc.max_send_message_length": 16 * 1024 * 1024,
        # One channel per backend: do not share subchannels across them.
        "grpc.use_local_subchannel_pool": 1,
    }
    base.update(dict(options.channel_options))
    return list(base.items())


class StreamState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    BACKOFF = "backoff"
    CLOSED = "closed"


@dataclass(slots=True)
class StreamStats:
    batches: int = 0
    items: int = 0
    max_batch: int = 0
    last_batch: int = 0
    # Answers that came after their call timed out or was cancelled (dropped).
    late_replies: int = 0
    # Times the stream broke and was re-opened.
    reconnects: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.last_batch = size
        self.max_batch = max(self.max_batch, size)
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1


class _StreamBroken(Exception):
    pass


class BackendStream(Generic[ReqItem, RepItem, ReqBatch, RepBatch]):
    """The stream to one backend address; see the module docstring."""

    def __init__(
        self,
        address: str,
        spec: StreamSpec[ReqItem, RepItem, ReqBatch, RepBatch],
        options: StreamOptions,
        on_state_change: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self._on_state_change = on_state_change
        self._spec = spec
        self._options = options
        self.state = StreamState.CONNECTING
        self.stats = StreamStats()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[RepItem]] = {}
        # (id, item, absolute deadline on the loop clock)
        self._outbox: list[tuple[int, ReqItem, float]] = []
        self._wakeup = asyncio.Event()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._channel: grpc.aio.Channel | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.last_error = ""

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        if self._supervisor is None:
            self._channel = grpc.aio.insecure_channel(
                self.address, options=channel_options(self._options)
            )
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"stream {self._spec.name} {self.address}"
            )

    async def close(self) -> None:
        self.state = StreamState.CLOSED
        self._ready.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._fail_all(Unavailable(f"{self._spec.name}: client closed"))
        if self._channel is not None:
            await self._channel.close()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_idle(self) -> None:
        """Return once no call is pending."""
        await self._idle.wait()

    def _set_state(self, state: StreamState) -> None:
        self.state = state
        if self._on_state_change is not None:
            self._on_state_change()

    # -- calls -----------------------------------------------------------------------

    async def call(self, item: ReqItem, timeout: float) -> RepItem:
        """Send `item` (its id, deadline and trace context are set here) and await the
        reply item. Raises Unavailable, DeadlineExceeded or the ServiceError the
        backend answered with."""
        if self.state in (StreamState.BACKOFF, StreamState.CLOSED):
            # Fail fast: the caller answers 503 or tries another instance instead
            # of queueing behind a dead stream.
            reason = self.last_error or self.state.value
            raise Unavailable(f"{self._spec.name} at {self.address} unavailable: {reason}")
        loop = asyncio.get_running_loop()
        cid = next(self._ids)
        item.id = cid
        inject_trace(item.trace_context)
        future: asyncio.Future[RepItem] = loop.create_future()
        self._pending[cid] = future
        self._idle.clear()
        self._outbox.append((cid, item, loop.time() + timeout))
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise DeadlineExceeded(
                f"{self._spec.name} at {self.address}: no answer within {timeout:.3f}s"
            ) from None
        finally:
            # Cancelled or timed out: forget it; the writer skips it if unsent and
            # the reader drops its late answer.
            self._pending.pop(cid, None)
            if not self._pending:
                self._idle.set()
        if reply.WhichOneof("result") == "error":
            raise error_from_proto(reply.error)
        return reply

    # -- stream machinery ---------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self._options.backoff_initial
        assert self._channel is not None
        while True:
            # Only the first connection attempt queues calls (start-up); while a
            # broken stream is being re-established the state stays BACKOFF so that
            # calls fail fast instead of waiting for a server that is down.
            stream: Any = None
            answered_before = self.stats.items
            try:
                await asyncio.wait_for(self._channel.channel_ready(), self._options.connect_timeout)
                stream = self._spec.open(self._channel)
                self._set_state(StreamState.READY)
                self._ready.set()
                self._wakeup.set()  # items queued while connecting go out now
                await self._pump(stream)
            except asyncio.CancelledError:
                if stream is not None:
                    stream.cancel()
                raise
            except TimeoutError:
                self.last_error = f"cannot connect within {self._options.connect_timeout}s"
            except grpc.aio.AioRpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if stream is not None:
                stream.cancel()
            self._ready.clear()
            self._set_state(StreamState.BACKOFF)
            self.stats.reconnects += 1
            self._fail_all(
                Unavailable(f"{self._spec.name} at {self.address} broke: {self.last_error}")
            )
            log.warning(
                "stream %s to %s down (%s); retrying in %.2fs",
                self._spec.name,
                self.address,
                self.last_error,
                delay,
            )
            if self.stats.items > answered_before:
                delay = self._options.backoff_initial  # it worked for a while
            # Jitter so many clients do not reconnect in lockstep.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self._options.backoff_max)

    async def _pump(self, stream: Any) -> None:
        writer = asyncio.create_task(self._write_loop(stream))
        reader = asyncio.create_task(self._read_loop(stream))
        try:
            done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, reader):
                task.cancel()
            for task in (writer, reader):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
        raise _StreamBroken("stream ended by the server")

    async def _write_loop(self, stream: Any) -> None:
        loop = asyncio.get_running_loop()
        max_batch = self._options.max_batch
        while True:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Everything queued since the last write goes out in one message: while
            # the previous write was in flight, concurrent callers filled the outbox.
            entries = self._outbox[:max_batch]
            del self._outbox[:max_batch]
            now = loop.time()
            items: list[ReqItem] = []
            for cid, item, deadline in entries:
                if cid not in self._pending:
                    continue  # cancelled / timed out before it was sent
                remaining = deadline - now
                if remaining <= 0:
                    continue  # its caller's timeout fires now anyway
                item.deadline_ms = max(1, int(remaining * 1000))
                items.append(item)
            if items:
                self.stats.record(len(items))
                await stream.write(self._spec.request_batch(items))

    async def _read_loop(self, stream: Any) -> None:
        while True:
            batch = await stream.read()
            if batch is grpc.aio.EOF:
                return
            for reply in self._spec.reply_items(batch):
                future = self._pending.pop(reply.id, None)
                if future is None or future.done():
                    self.stats.late_replies += 1
                    continue
                future.set_result(reply)

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        self._outbox.clear()
        self._idle.set()
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
