"""The default script's hand-offs to presence: msilo's m_store for a MESSAGE to a user
without a binding, and SUBSCRIBE message-summary going to presence when it is on.

The presence service is the real one (SQLite tables of the router tests, memory KV
and bus), with the recording EdgeClient of sipmesh.presence.testing standing in for
the edge that would carry its NOTIFYs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sipmesh.presence.service import PresenceService
from sipmesh.presence.testing import RecordingEdge
from sipmesh.registrar.api import Registrar
from sipmesh.router.service import RouterService
from sipmesh.router.testing import DOMAIN, answer_challenge, route_request, sip_request
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.sip import Request
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.db import Database
from sipmesh.state.kv_memory import MemoryKV
from tests.router.test_default_script import register, status_of


@pytest.fixture
async def presence(db: Database) -> AsyncIterator[tuple[PresenceService, RecordingEdge]]:
    edge = RecordingEdge()
    bus = MemoryBus()
    service = PresenceService(
        config=PresenceConfig(initial_notify_delay_ms=0),
        instance_id="pres-router-test",
        db=db,
        kv=MemoryKV(),
        bus=bus,
        edge=edge,
    )
    await service.start()
    try:
        yield service, edge
    finally:
        await service.stop(1.0)
        await bus.close()


async def authed(router: RouterService, msg: Request) -> Any:
    """Route ``msg`` as alice: the 407 challenge, then the request with credentials."""
    first = await router.route(route_request(msg))
    assert status_of(first)[0] == 407
    return await router.route(
        route_request(answer_challenge(msg, first.reply.raw, "alice", "alicepw"))
    )


def message_to(user: str, text: str = "hello") -> Request:
    return sip_request(
        "MESSAGE",
        f"sip:{user}@{DOMAIN}",
        headers=[("Content-Type", "text/plain")],
        body=text.encode(),
    )


async def silo_rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch("SELECT * FROM silo ORDER BY id")]


async def test_message_to_user_without_binding_is_stored_with_202(
    make_router: Any, presence: tuple[PresenceService, RecordingEdge], db: Database
) -> None:
    router = await make_router(features={"presence": True})
    router.env.presence = presence[0]
    decision = await authed(router, message_to("bob", "are you there?"))
    assert status_of(decision) == (202, "Accepted")
    rows = await silo_rows(db)
    assert [(r["username"], r["domain"], r["body"]) for r in rows] == [
        ("bob", DOMAIN, b"are you there?")
    ]


async def test_message_to_registered_user_is_relayed_not_stored(
    make_router: Any,
    registrar: Registrar,
    presence: tuple[PresenceService, RecordingEdge],
    db: Database,
) -> None:
    router = await make_router(features={"presence": True})
    router.env.presence = presence[0]
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    decision = await authed(router, message_to("bob"))
    assert decision.WhichOneof("action") == "relay"
    assert [t.uri for t in decision.relay.targets] == ["sip:bob@192.0.2.20:5062"]
    assert await silo_rows(db) == []


async def test_message_without_presence_feature_keeps_404(
    make_router: Any, presence: tuple[PresenceService, RecordingEdge], db: Database
) -> None:
    router = await make_router()
    router.env.presence = presence[0]
    assert status_of(await authed(router, message_to("bob"))) == (404, "Not Found")
    assert await silo_rows(db) == []


async def test_message_store_with_presence_unreachable_is_503(make_router: Any) -> None:
    router = await make_router(features={"presence": True})
    assert router.env.presence is None
    decision = await authed(router, message_to("bob"))
    assert status_of(decision) == (503, "Service Unavailable")


async def test_an_invite_to_user_without_binding_is_still_404(
    make_router: Any, presence: tuple[PresenceService, RecordingEdge], db: Database
) -> None:
    router = await make_router(features={"presence": True})
    router.env.presence = presence[0]
    invite = sip_request("INVITE", f"sip:bob@{DOMAIN}")
    assert status_of(await authed(router, invite)) == (404, "Not Found")
    assert await silo_rows(db) == []


def mwi_subscribe() -> Request:
    return sip_request(
        "SUBSCRIBE",
        f"sip:alice@{DOMAIN}",
        to_uri=f"sip:alice@{DOMAIN}",
        headers=[
            ("Event", "message-summary"),
            ("Expires", "600"),
            ("Contact", "<sip:alice@192.0.2.10:5060>"),
            ("Accept", "application/simple-message-summary"),
        ],
    )


async def test_subscribe_message_summary_goes_to_presence_when_on(
    make_router: Any, presence: tuple[PresenceService, RecordingEdge]
) -> None:
    service, edge = presence
    router = await make_router(features={"presence": True, "voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    router.env.presence = service
    decision = await authed(router, mwi_subscribe())
    assert status_of(decision)[0] == 200
    await service.drain()
    notifies = edge.notifies("sip:alice@192.0.2.10:5060")
    assert len(notifies) == 1
    assert notifies[0].get("Event") == "message-summary"
    # RFC 3842 §3.5: no state published yet, so no messages are waiting.
    assert b"Messages-Waiting: no" in notifies[0].body


async def test_subscribe_message_summary_without_presence_goes_to_voicemail(
    make_router: Any,
) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    decision = await authed(router, mwi_subscribe())
    assert [t.uri for t in decision.relay.targets] == ["sip:alice@192.0.2.55:5060"]


async def test_subscribe_message_summary_without_presence_or_voicemail_is_404(
    make_router: Any,
) -> None:
    router = await make_router()
    decision = await authed(router, mwi_subscribe())
    assert status_of(decision) == (404, "No voicemail service")
