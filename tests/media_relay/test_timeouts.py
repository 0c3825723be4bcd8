"""Media timeout: no packets for the configured time deletes the call and publishes
sipmesh.media.timeout, on the in-process bus and on NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sipmesh.gen.sipmesh.v1 import events_pb2, media_relay_pb2
from sipmesh.media_relay.service import MediaRelayService
from sipmesh.media_relay.timeouts import SUBJECT
from sipmesh.state.bus import EventBus, Message
from sipmesh.state.factory import open_bus

from .conftest import Endpoint, media_target, relay_config, rtp, sdp

Key = media_relay_pb2.MediaSessionKey


async def run_timeout(bus: EventBus, endpoints: Callable[..., Endpoint]) -> None:
    received: asyncio.Queue[Message] = asyncio.Queue()

    async def handler(message: Message) -> None:
        await received.put(message)

    sub = await bus.subscribe(SUBJECT, handler)
    relay = MediaRelayService(relay_config(media_timeout=0.6), bus=bus, relay_id="relay-t")
    await relay.start()
    try:
        caller, callee = endpoints(), endpoints()
        offer = await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="idle", from_tag="a"), sdp=sdp("127.0.0.1", caller.port)
            )
        )
        answer = await relay.answer(
            media_relay_pb2.AnswerRequest(
                key=Key(call_id="idle", from_tag="a", to_tag="b"),
                sdp=sdp("127.0.0.1", callee.port),
            )
        )
        # A second call that keeps sending survives the sweep.
        await relay.offer(
            media_relay_pb2.OfferRequest(
                key=Key(call_id="busy", from_tag="a"), sdp=sdp("127.0.0.1", caller.port)
            )
        )
        busy = await relay.answer(
            media_relay_pb2.AnswerRequest(
                key=Key(call_id="busy", from_tag="a", to_tag="b"),
                sdp=sdp("127.0.0.1", callee.port),
            )
        )
        caller.send(rtp(1), media_target(answer.sdp)[:2])
        assert (await callee.recv())[0] == rtp(1)
        del offer

        async def keep_busy() -> None:
            for seq in range(40):
                caller.send(rtp(seq), media_target(busy.sdp)[:2])
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(keep_busy())
        message = await asyncio.wait_for(received.get(), 5)
        envelope = events_pb2.Envelope.FromString(message.data)
        assert envelope.service == "media-relay"
        event = envelope.media_timeout
        assert (event.call_id, event.from_tag, event.to_tag) == ("idle", "a", "b")
        assert event.relay == "relay-t"
        assert event.last_packet_at > 0
        listed = await relay.list_sessions(media_relay_pb2.ListSessionsRequest())
        assert [s.key.call_id for s in listed.sessions] == ["busy"]
        assert relay.timeouts.timed_out == 1
        feeder.cancel()
    finally:
        await relay.stop(0)
        await sub.stop()


async def test_media_timeout_on_the_memory_bus(endpoints: Callable[..., Endpoint]) -> None:
    bus = await open_bus("memory", prefix="t")
    try:
        await run_timeout(bus, endpoints)
    finally:
        await bus.close()


@pytest.mark.nats
async def test_media_timeout_on_nats(
    nats_url: str, unique_prefix: str, endpoints: Callable[..., Endpoint]
) -> None:
    bus = await open_bus(nats_url, prefix=unique_prefix)
    try:
        await run_timeout(bus, endpoints)
    finally:
        await bus.close()
