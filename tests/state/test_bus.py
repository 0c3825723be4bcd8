"""EventBus contract on MemoryBus and NatsBus (the real NATS + JetStream server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sipmesh.state.bus import EventBus, Message, stream_name, subject_matches
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.bus_nats import NatsBus
from sipmesh.state.errors import StateUnavailable
from sipmesh.state.testing import free_port, nats_server

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]


@dataclass
class BusCase:
    kind: str
    bus: EventBus
    #: Another process's view of the same bus (a new connection on NATS).
    open_peer: Callable[[], Awaitable[EventBus]]
    #: "Crash" a peer: drop it without stopping its consumers cleanly (no nak/ack).
    crash: Callable[[EventBus], Awaitable[None]]
    peers: list[EventBus] = field(default_factory=list)


@pytest.fixture(params=BACKENDS)
async def bus_case(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[BusCase]:
    if request.param == "memory":
        bus: EventBus = MemoryBus(prefix=unique_prefix)

        async def peer() -> EventBus:
            return bus

        async def crash(b: EventBus) -> None:
            # In one process a crash is a consumer stopped mid-message.
            return None

        case = BusCase("memory", bus, peer, crash)
        yield case
        await bus.close()
        return
    url = request.getfixturevalue("nats_url")
    opened: list[NatsBus] = []

    async def open_nats() -> EventBus:
        b = await NatsBus.connect(url, prefix=unique_prefix)
        opened.append(b)
        return b

    async def crash_nats(b: EventBus) -> None:
        assert isinstance(b, NatsBus)
        # Close the TCP connection under the client: nothing is acked or nak'ed.
        await b._nc.close()

    bus = await open_nats()
    yield BusCase("nats", bus, open_nats, crash_nats)
    js = opened[0]._nc.jetstream() if not opened[0]._nc.is_closed else None
    if js is not None:
        for info in await js.streams_info():
            if info.config.name and info.config.name.startswith(stream_name(unique_prefix, "")):
                await js.delete_stream(info.config.name)
    for b in opened:
        await b.close()


async def eventually(cond: Callable[[], bool], within: float = 8.0) -> None:
    """Poll ``cond`` every 10 ms; fail after ``within`` seconds (every wait is bounded)."""
    for _ in range(int(within / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s")


def test_subject_matching() -> None:
    assert subject_matches("sipmesh.reg.*", "sipmesh.reg.added")
    assert not subject_matches("sipmesh.reg.*", "sipmesh.reg.added.x")
    assert subject_matches("sipmesh.>", "sipmesh.reg.added.x")
    assert not subject_matches("sipmesh.>", "sipmesh")
    assert subject_matches("a.b", "a.b")
    assert not subject_matches("a.b", "a.b.c")
    assert not subject_matches("sipmesh.reg.>", "sipmesh.registrar.x")
    assert not subject_matches("sipmesh.reg.>", "sipmesh.reg")
    assert subject_matches(">", "a")
    assert subject_matches("a.*.>", "a.b.c")
    assert not subject_matches("a.*.>", "a.b")
    assert stream_name("t1.x", "EVENTS") == "t1_x_EVENTS"


async def test_publish_subscribe_wildcards_and_headers(bus_case: BusCase) -> None:
    bus = bus_case.bus
    got: list[Message] = []
    star: list[str] = []

    async def on_any(msg: Message) -> None:
        got.append(msg)

    async def on_star(msg: Message) -> None:
        star.append(msg.subject)

    s1 = await bus.subscribe("sipmesh.reg.>", on_any)
    s2 = await bus.subscribe("sipmesh.reg.*", on_star)
    if isinstance(bus, NatsBus):
        await bus.ping()  # the subscriptions reached the server
    await bus.publish("sipmesh.reg.added", b"one", {"traceparent": "00-abc-def-01"})
    await bus.publish("sipmesh.reg.removed.x", b"two")
    await bus.publish("sipmesh.other", b"no")
    await eventually(lambda: len(got) == 2 and len(star) == 1)
    assert [(m.subject, m.data) for m in got] == [
        ("sipmesh.reg.added", b"one"),
        ("sipmesh.reg.removed.x", b"two"),
    ]
    assert got[0].headers == {"traceparent": "00-abc-def-01"}
    assert star == ["sipmesh.reg.added"]
    await s1.stop()
    await s2.stop()
    await bus.publish("sipmesh.reg.added", b"after stop")
    await bus.ping()
    await asyncio.sleep(0.05)
    assert len(got) == 2


async def test_queue_group_shares_work(bus_case: BusCase) -> None:
    bus, other = bus_case.bus, await bus_case.open_peer()
    a: list[bytes] = []
    b: list[bytes] = []
    everyone: list[bytes] = []

    def collect(into: list[bytes]) -> Callable[[Message], Awaitable[None]]:
        async def handler(msg: Message) -> None:
            into.append(msg.data)

        return handler

    await bus.subscribe("work", collect(a), queue="workers")
    await other.subscribe("work", collect(b), queue="workers")
    await bus.subscribe("work", collect(everyone))
    await bus.ping()
    await other.ping()
    for i in range(40):
        await bus.publish("work", str(i).encode())
    await eventually(lambda: len(a) + len(b) == 40 and len(everyone) == 40)
    # Each message went to exactly one member of the group; both members got some.
    assert sorted(a + b, key=int) == [str(i).encode() for i in range(40)]
    assert a
    assert b


async def test_request_reply(bus_case: BusCase) -> None:
    bus, other = bus_case.bus, await bus_case.open_peer()

    async def upper(msg: Message) -> bytes:
        return msg.data.upper() + msg.headers.get("x", "").encode()

    async def slow(msg: Message) -> bytes:
        await asyncio.sleep(5)
        return b"late"

    await other.respond("svc.upper", upper, queue="svc")
    await other.respond("svc.slow", slow)
    await other.ping()
    reply = await bus.request("svc.upper", b"abc", timeout=2.0, headers={"x": "!"})
    assert reply.data == b"ABC!"
    with pytest.raises(StateUnavailable):
        await bus.request("svc.nobody", b"?", timeout=0.5)
    with pytest.raises(StateUnavailable):
        await bus.request("svc.slow", b"?", timeout=0.3)


async def test_durable_consumer_acks_and_resumes(bus_case: BusCase) -> None:
    bus = bus_case.bus
    await bus.ensure_stream("EVENTS", ["sipmesh.call.>"])
    await bus.ensure_stream("EVENTS", ["sipmesh.call.>"])  # idempotent
    for i in range(5):
        await bus.publish(f"sipmesh.call.{i}", f"e{i}".encode())
    got: list[Message] = []

    async def handler(msg: Message) -> None:
        got.append(msg)

    sub = await bus.consume("EVENTS", "acc", ["sipmesh.call.>"], handler)
    await eventually(lambda: len(got) == 5)
    assert [m.data for m in got] == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert [m.subject for m in got] == [f"sipmesh.call.{i}" for i in range(5)]
    assert all(m.delivery_count == 1 for m in got)
    seqs = [m.stream_seq or 0 for m in got]
    assert all(seqs)
    assert seqs == sorted(seqs)
    await sub.stop()
    await bus.publish("sipmesh.call.9", b"while stopped")
    got.clear()
    sub = await bus.consume("EVENTS", "acc", ["sipmesh.call.>"], handler)
    await eventually(lambda: len(got) == 1)
    await asyncio.sleep(0.2)
    # Acknowledged messages are not delivered again; the one published meanwhile is.
    assert [m.data for m in got] == [b"while stopped"]
    await sub.stop()


async def test_handler_error_naks_and_redelivers(bus_case: BusCase) -> None:
    bus = bus_case.bus
    seen: list[tuple[bytes, int]] = []

    async def flaky(msg: Message) -> None:
        seen.append((msg.data, msg.delivery_count))
        if msg.data == b"bad" and msg.delivery_count < 3:
            raise RuntimeError("database down")

    sub = await bus.consume("NAK", "w", ["nak.>"], flaky, ack_wait=5)
    await bus.publish("nak.1", b"bad")
    await bus.publish("nak.2", b"good")
    await eventually(lambda: (b"bad", 3) in seen and (b"good", 1) in seen)
    await asyncio.sleep(0.2)
    assert [c for d, c in seen if d == b"bad"] == [1, 2, 3]
    assert [c for d, c in seen if d == b"good"] == [1]
    await sub.stop()


async def test_unacked_message_redelivered_after_consumer_restart(bus_case: BusCase) -> None:
    """A consumer dies while handling a message; the next one with the durable name gets it."""
    first_bus = await bus_case.open_peer()
    started = asyncio.Event()
    never = asyncio.Event()

    async def stuck(msg: Message) -> None:
        started.set()
        await never.wait()  # the process "dies" before finishing

    sub = await first_bus.consume("CDR", "accounting", ["cdr.>"], stuck, ack_wait=1.0)
    await bus_case.bus.publish("cdr.end", b"call-1")
    async with asyncio.timeout(5):
        await started.wait()
    if bus_case.kind == "nats":
        await bus_case.crash(first_bus)
    await sub.stop()

    second_bus = await bus_case.open_peer()
    got: list[Message] = []

    async def record(msg: Message) -> None:
        got.append(msg)

    sub2 = await second_bus.consume("CDR", "accounting", ["cdr.>"], record, ack_wait=1.0)
    await eventually(lambda: len(got) >= 1)
    assert got[0].data == b"call-1"
    assert got[0].delivery_count >= 2
    await asyncio.sleep(0.3)
    assert [m.data for m in got] == [b"call-1"]
    await sub2.stop()


async def test_durable_shared_by_two_consumers(bus_case: BusCase) -> None:
    bus, other = bus_case.bus, await bus_case.open_peer()
    a: list[bytes] = []
    b: list[bytes] = []

    def collect(into: list[bytes]) -> Callable[[Message], Awaitable[None]]:
        async def handler(msg: Message) -> None:
            into.append(msg.data)
            await asyncio.sleep(0.005)

        return handler

    s1 = await bus.consume("SHARE", "acc", ["share.>"], collect(a), batch=2)
    s2 = await other.consume("SHARE", "acc", ["share.>"], collect(b), batch=2)
    for i in range(30):
        await bus.publish("share.x", str(i).encode())
    await eventually(lambda: len(a) + len(b) >= 30)
    await asyncio.sleep(0.2)
    assert sorted(a + b, key=int) == [str(i).encode() for i in range(30)]
    assert a
    assert b
    await s1.stop()
    await s2.stop()


async def test_stream_subjects_updated_and_deleted(bus_case: BusCase) -> None:
    bus = bus_case.bus
    await bus.ensure_stream("UPD", ["upd.a"])
    await bus.ensure_stream("UPD", ["upd.b"])
    got: list[str] = []

    async def handler(msg: Message) -> None:
        got.append(msg.subject)

    await bus.publish("upd.a", b"1")
    await bus.publish("upd.b", b"2")
    await bus.publish("upd.c", b"not captured")
    sub = await bus.consume("UPD", "d", ["upd.a", "upd.b"], handler)
    await eventually(lambda: len(got) == 2)
    assert got == ["upd.a", "upd.b"]
    await sub.stop()
    assert await bus.delete_stream("UPD") is True
    assert await bus.delete_stream("UPD") is False


async def test_health(bus_case: BusCase) -> None:
    await bus_case.bus.ping()
    assert bus_case.bus.healthy


@pytest.mark.nats
@pytest.mark.slow
async def test_nats_unavailable_then_reconnects(tmp_path: Path) -> None:
    port = free_port()
    server = nats_server(port, tmp_path / "js")
    server.start()
    bus = await NatsBus.connect(f"nats://127.0.0.1:{port}", prefix="rc", op_timeout=1.0)
    got: list[bytes] = []
    durable: list[bytes] = []

    async def on_msg(msg: Message) -> None:
        got.append(msg.data)

    async def on_durable(msg: Message) -> None:
        durable.append(msg.data)

    try:
        await bus.subscribe("ping", on_msg)
        consumer = await bus.consume("RC", "d", ["rc.ev"], on_durable, ack_wait=1.0)
        await bus.publish("ping", b"1")
        await bus.publish("rc.ev", b"before")
        await eventually(lambda: got == [b"1"] and durable == [b"before"])
        server.stop()
        await eventually(lambda: not bus.healthy)
        with pytest.raises(StateUnavailable):
            await bus.publish("ping", b"lost")
        with pytest.raises(StateUnavailable):
            await bus.request("svc", b"?", timeout=0.5)
        with pytest.raises(StateUnavailable):
            await bus.ping()
        server.start()  # same port, same JetStream store directory
        await eventually(lambda: bus.healthy, within=15)
        await bus.ping()
        # The same client, its plain subscription and its durable consumer work again.
        await bus.publish("ping", b"2")
        await bus.publish("rc.ev", b"after")
        await eventually(lambda: got == [b"1", b"2"] and b"after" in durable, 15)
        # At least once: an ack in flight when the server was killed may be lost, so
        # "before" can come again, but nothing is lost and nothing else is duplicated.
        assert set(durable) == {b"before", b"after"}
        assert durable.count(b"after") == 1
        await consumer.stop()
    finally:
        with contextlib.suppress(StateUnavailable):
            await bus.delete_stream("RC")
        await bus.close()
        server.stop()
