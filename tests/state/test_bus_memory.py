"""The in-process bus's stream retention: what a long-running embedded server keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipmesh.state.bus import Message
from sipmesh.state.bus_memory import MemoryBus


async def until(cond: Callable[[], bool]) -> None:
    """Wait (bounded) for consumers running on their own tasks."""
    async with asyncio.timeout(5.0):
        while not cond():  # noqa: ASYNC110 - polling another task's progress
            await asyncio.sleep(0.01)


async def settle(bus: MemoryBus, stream: str, last_seq: int) -> None:
    durables = bus._streams[stream].durables.values()
    await until(lambda: all(d.floor() > last_seq for d in durables))


async def test_a_stream_without_consumers_keeps_at_most_max_msgs() -> None:
    bus = MemoryBus(max_msgs=100)
    await bus.ensure_stream("EVENTS", ["ev.>"])
    for i in range(250):
        await bus.publish("ev.x", str(i).encode())
    stream = bus._streams["EVENTS"]
    assert len(stream.messages) == 100
    assert min(stream.messages) == 151  # the oldest went first
    # A consumer that arrives now starts at the oldest message still kept.
    got: list[bytes] = []

    async def handler(msg: Message) -> None:
        got.append(msg.data)

    sub = await bus.consume("EVENTS", "late", ["ev.>"], handler)
    try:
        await until(lambda: len(got) >= 100)
        assert got[0] == b"150"
        assert got[-1] == b"249"
    finally:
        await sub.stop()
        await bus.close()


async def test_messages_every_durable_acknowledged_are_dropped() -> None:
    bus = MemoryBus(max_msgs=10_000)
    fast: list[bytes] = []
    slow_gate = asyncio.Event()
    slow: list[bytes] = []

    async def on_fast(msg: Message) -> None:
        fast.append(msg.data)

    async def on_slow(msg: Message) -> None:
        await slow_gate.wait()
        slow.append(msg.data)

    a = await bus.consume("EVENTS", "acc", ["ev.>"], on_fast)
    b = await bus.consume("EVENTS", "cdr", ["ev.>"], on_slow)
    try:
        for i in range(50):
            await bus.publish("ev.x", str(i).encode())
        await until(lambda: len(fast) >= 50)
        # The slow consumer holds the first message: everything from it on is kept.
        assert len(bus._streams["EVENTS"].messages) == 50
        slow_gate.set()
        await settle(bus, "EVENTS", 50)
        await bus.publish("ev.x", b"last")  # trimming happens as messages come in
        await until(lambda: len(slow) >= 51 and len(fast) >= 51)
        await bus.publish("ev.x", b"after")
        assert len(bus._streams["EVENTS"].messages) <= 2
        assert slow[:3] == [b"0", b"1", b"2"]
    finally:
        await a.stop()
        await b.stop()
        await bus.close()


async def test_a_stopped_durable_keeps_its_messages_within_the_limit() -> None:
    bus = MemoryBus(max_msgs=30)
    got: list[bytes] = []

    async def handler(msg: Message) -> None:
        got.append(msg.data)

    sub = await bus.consume("EVENTS", "acc", ["ev.>"], handler)
    await bus.publish("ev.x", b"0")
    await until(lambda: bool(got))
    await sub.stop()
    for i in range(1, 21):
        await bus.publish("ev.x", str(i).encode())
    # Not acknowledged yet by the stopped durable: kept for it.
    assert len(bus._streams["EVENTS"].messages) == 20
    sub = await bus.consume("EVENTS", "acc", ["ev.>"], handler)
    try:
        await until(lambda: len(got) >= 21)
        assert got == [str(i).encode() for i in range(21)]
    finally:
        await sub.stop()
        await bus.close()
