"""BatchingStreamClient / serve_batch_stream over real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from sipmesh.clients.backend import StreamOptions, StreamState
from sipmesh.clients.errors import DeadlineExceeded, InvalidArgument, Unavailable
from sipmesh.clients.specs import ROUTER_STREAM
from sipmesh.clients.stream import BatchingStreamClient
from sipmesh.gen.sipmesh.v1 import router_pb2

pytestmark = pytest.mark.timeout(60)

RouterStream = BatchingStreamClient[
    router_pb2.RouteItem, router_pb2.DecisionItem, router_pb2.RouteBatch, router_pb2.DecisionBatch
]
WaitUntil = Callable[..., Awaitable[None]]
# start_router(name="r1", port=0) -> RunningRouter (tests/clients/conftest.py)
StartRouter = Callable[..., Awaitable[Any]]

FAST = StreamOptions(
    default_timeout=5.0, connect_timeout=1.0, backoff_initial=0.02, backoff_max=0.2
)


def item(tid: str, handler: str = "") -> router_pb2.RouteItem:
    request = router_pb2.RouteRequest(transaction_id=tid, handler=handler)
    return router_pb2.RouteItem(request=request)


async def reason(client: RouterStream, tid: str, timeout: float | None = None) -> str:
    reply = await client.call(item(tid), timeout)
    return reply.decision.reply.reason


async def open_client(target: str, options: StreamOptions = FAST) -> RouterStream:
    client: RouterStream = BatchingStreamClient(target, ROUTER_STREAM, options)
    await client.start()
    return client


async def test_idle_call_goes_out_alone(start_router: StartRouter) -> None:
    router = await start_router()
    client = await open_client(router.address)
    try:
        await client.wait_ready(5)
        assert await reason(client, "a") == "r1:a"
        assert await reason(client, "b") == "r1:b"
        assert router.servicer.batches == [1, 1]
        stats = client.backend(router.address).stats
        assert (stats.batches, stats.items) == (2, 2)
    finally:
        await client.close()


async def test_concurrent_calls_share_batches(start_router: StartRouter) -> None:
    router = await start_router()
    client = await open_client(router.address)
    try:
        await client.wait_ready(5)
        tids = [f"t{i}" for i in range(300)]
        answers = await asyncio.gather(*(reason(client, tid) for tid in tids))
        assert answers == [f"r1:{tid}" for tid in tids]
        assert sum(router.servicer.batches) == 300
        assert len(router.servicer.batches) < 300
        assert max(router.servicer.batches) > 1
        stats = client.backend(router.address).stats
        assert stats.items == 300
        assert stats.batches == len(router.servicer.batches)
    finally:
        await client.close()


async def test_out_of_order_answers_reach_their_callers(start_router: StartRouter) -> None:
    router = await start_router()
    client = await open_client(router.address)
    finished: list[int] = []

    async def one(index: int) -> str:
        # The first call sleeps longest, so answers come back in reverse order.
        answer = await reason(client, f"sleep:{(10 - index) * 0.03:.2f}:{index}")
        finished.append(index)
        return answer

    try:
        await client.wait_ready(5)
        answers = await asyncio.gather(*(one(i) for i in range(10)))
        assert answers == [f"r1:sleep:{(10 - i) * 0.03:.2f}:{i}" for i in range(10)]
        assert finished == list(reversed(range(10)))
    finally:
        await client.close()


async def test_deadline_per_call_and_late_answer_dropped(
    start_router: StartRouter, wait_until: WaitUntil
) -> None:
    router = await start_router()
    client = await open_client(router.address)
    try:
        await client.wait_ready(5)
        with pytest.raises(DeadlineExceeded):
            await reason(client, "sleep:30:slow", timeout=0.2)
        # The deadline travelled with the item: the server gave up on it too.
        await asyncio.wait_for(router.service.cancelled_event.wait(), 5)
        stats = client.backend(router.address).stats
        await wait_until(lambda: stats.late_replies == 1)
        assert client.backend(router.address).pending == 0
        # A timed-out call does not disturb the next ones.
        assert await reason(client, "after") == "r1:after"
    finally:
        await client.close()


async def test_cancelled_call_is_forgotten(
    start_router: StartRouter, wait_until: WaitUntil
) -> None:
    router = await start_router()
    client = await open_client(router.address)
    try:
        await client.wait_ready(5)
        task = asyncio.create_task(reason(client, "sleep:0.3:x"))
        await asyncio.wait_for(router.service.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        backend = client.backend(router.address)
        assert backend.pending == 0
        # Its answer still comes and is dropped, not delivered to anyone else.
        await wait_until(lambda: backend.stats.late_replies == 1)
        assert await reason(client, "next") == "r1:next"
    finally:
        await client.close()


async def test_service_errors_come_back_typed(start_router: StartRouter) -> None:
    router = await start_router()
    client = await open_client(router.address)
    try:
        with pytest.raises(InvalidArgument, match="no such handler"):
            await client.call(item("x", handler="invalid"))
        assert await reason(client, "ok") == "r1:ok"
    finally:
        await client.close()


async def test_server_restart_fails_pending_then_reconnects(
    start_router: StartRouter, wait_until: WaitUntil
) -> None:
    router = await start_router()
    port = router.port
    client = await open_client(router.address)
    try:
        await client.wait_ready(5)
        pending = [
            asyncio.create_task(reason(client, f"sleep:30:{i}", timeout=30)) for i in range(3)
        ]
        await wait_until(lambda: router.service.calls == 3)
        await router.stop()
        # Pending calls fail with Unavailable long before their 30 s deadline.
        async with asyncio.timeout(10):
            results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(result, Unavailable) for result in results), results
        # While the server is down new calls fail fast too (no waiting for a deadline).
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable):
                await reason(client, "down", timeout=30)
        restarted = await start_router("r2", port=port)
        await client.wait_ready(10)
        assert await reason(client, "back") == "r2:back"
        assert client.backend(restarted.address).stats.reconnects >= 1
    finally:
        await client.close()


async def test_unreachable_backend_fails_with_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = StreamOptions(connect_timeout=0.3, backoff_initial=0.05, backoff_max=0.2)
    client = await open_client(f"127.0.0.1:{port}", options)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(Unavailable):
                await reason(client, "x", timeout=30)
            with pytest.raises(Unavailable, match=r"unavailable|no backend"):
                await reason(client, "y", timeout=30)
    finally:
        await client.close()


async def test_two_backends_share_the_load(start_router: StartRouter) -> None:
    first = await start_router("r1")
    second = await start_router("r2")
    client = await open_client(f"{first.address},{second.address}")
    try:
        await client.wait_ready(5, count=2)
        for i in range(100):
            await reason(client, f"s{i}")
        assert (first.service.calls, second.service.calls) == (50, 50)
        answers = await asyncio.gather(*(reason(client, f"c{i}") for i in range(100)))
        assert {answer.split(":")[0] for answer in answers} == {"r1", "r2"}
        assert first.service.calls + second.service.calls == 200
    finally:
        await client.close()


async def test_dead_backend_is_dropped_and_rejoins(
    start_router: StartRouter, wait_until: WaitUntil
) -> None:
    first = await start_router("r1")
    second = await start_router("r2")
    client = await open_client(f"{first.address},{second.address}")
    try:
        await client.wait_ready(5, count=2)
        await second.stop()
        await wait_until(lambda: client.backend_states()[second.address] is StreamState.BACKOFF)
        before = first.service.calls
        answers = [await reason(client, f"d{i}") for i in range(20)]
        assert answers == [f"r1:d{i}" for i in range(20)]
        assert first.service.calls == before + 20
        # The backend comes back on the same address: it takes its share again.
        revived = await start_router("r3", port=second.port)
        await client.wait_ready(10, count=2)
        answers = [await reason(client, f"e{i}") for i in range(10)]
        assert revived.service.calls == 5
        assert {answer.split(":")[0] for answer in answers} == {"r1", "r3"}
    finally:
        await client.close()


async def test_re_resolution_adds_and_retires_backends(start_router: StartRouter) -> None:
    first = await start_router("r1")
    second = await start_router("r2")
    current = [first.address]

    async def resolver() -> list[str]:
        return list(current)

    client: RouterStream = BatchingStreamClient("ignored:1", ROUTER_STREAM, FAST, resolver=resolver)
    await client.start()
    try:
        await client.wait_ready(5)
        assert await reason(client, "a") == "r1:a"
        current.append(second.address)
        await client.refresh()
        await client.wait_ready(5, count=2)
        answers = {(await reason(client, f"b{i}")).split(":")[0] for i in range(4)}
        assert answers == {"r1", "r2"}
        current.remove(first.address)
        await client.refresh()
        assert list(client.backend_states()) == [second.address]
        answers = {(await reason(client, f"c{i}")).split(":")[0] for i in range(4)}
        assert answers == {"r2"}
    finally:
        await client.close()


async def test_trace_context_travels_with_each_item(start_router: StartRouter) -> None:
    router = await start_router()
    client = await open_client(router.address)
    span_context = SpanContext(
        trace_id=0x1234567890ABCDEF1234567890ABCDEF,
        span_id=0x1234567890ABCDEF,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    try:
        with trace.use_span(NonRecordingSpan(span_context)):
            await reason(client, "traced")
        await reason(client, "untraced")
        assert router.service.trace_ids == [span_context.trace_id, 0]
    finally:
        await client.close()
