"""PUBLISH (RFC 3903): entity tags, refresh/modify/remove, expiry, error responses."""

from __future__ import annotations

from sipmesh.presence.testing import DOMAIN, MakeHarness, pidf, sip


async def test_initial_publish_gets_etag_and_expires(make: MakeHarness) -> None:
    h = await make()
    r = await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "open"), expires=1800)
    assert r.status == 200
    assert r.get("SIP-ETag")
    assert r.get("Expires") == "1800"
    pubs = await h.service.store.publications("alice", DOMAIN, "presence", h.service.now())
    assert len(pubs) == 1
    assert b"<basic>open</basic>" in pubs[0].body


async def test_rpid_kept_byte_for_byte(make: MakeHarness) -> None:
    h = await make()
    body = pidf(f"sip:alice@{DOMAIN}", "open", note="on-the-phone")
    await h.publish("alice", body)
    pubs = await h.service.store.publications("alice", DOMAIN, "presence", h.service.now())
    assert pubs[0].body == body.encode()


async def test_refresh_modify_remove(make: MakeHarness) -> None:
    h = await make()
    first = await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "open"))
    etag1 = first.get("SIP-ETag") or ""
    refreshed = await h.publish("alice", etag=etag1, expires=600)
    etag2 = refreshed.get("SIP-ETag") or ""
    assert refreshed.status == 200
    assert etag2
    assert etag2 != etag1
    # The old tag is no longer valid (RFC 3903 §4.1: each response carries a new one).
    stale = await h.publish("alice", etag=etag1, expires=600)
    assert stale.status == 412
    modified = await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "closed"), etag=etag2)
    etag3 = modified.get("SIP-ETag") or ""
    assert modified.status == 200
    pubs = await h.service.store.publications("alice", DOMAIN, "presence", h.service.now())
    assert len(pubs) == 1
    assert b"closed" in pubs[0].body
    removed = await h.publish("alice", etag=etag3, expires=0)
    assert removed.status == 200
    assert removed.get("Expires") == "0"
    assert await h.service.store.publications("alice", DOMAIN, "presence", h.service.now()) == []


async def test_unknown_etag_is_412(make: MakeHarness) -> None:
    h = await make()
    r = await h.publish("alice", etag="nope", expires=60)
    assert r.status == 412


async def test_unknown_event_is_489_with_allow_events(make: MakeHarness) -> None:
    h = await make()
    r = await h.publish("alice", "x", event="foo", ctype="text/plain")
    assert r.status == 489
    assert "presence" in r.get_all("Allow-Events")
    # presence.winfo state is produced by the server, never published.
    r = await h.publish("alice", "x", event="presence.winfo", ctype="text/plain")
    assert r.status == 489


async def test_malformed_pidf_is_400(make: MakeHarness) -> None:
    h = await make()
    r = await h.publish("alice", "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple>")
    assert r.status == 400
    r = await h.publish("alice", "<foo xmlns='urn:x'/>")
    assert r.status == 400
    bomb = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><presence/>'
    assert (await h.publish("alice", bomb)).status == 400
    assert await h.service.store.publications("alice", DOMAIN, "presence", h.service.now()) == []


async def test_wrong_content_type_is_415_with_accept(make: MakeHarness) -> None:
    h = await make()
    r = await h.publish("alice", "hello", ctype="text/plain")
    assert r.status == 415
    assert r.get("Accept") == "application/pidf+xml"


async def test_bad_expires(make: MakeHarness) -> None:
    h = await make(min_expires=60, max_expires=3600)
    body = pidf(f"sip:alice@{DOMAIN}", "open")
    brief = await h.publish("alice", body, expires=10)
    assert brief.status == 423
    assert brief.get("Min-Expires") == "60"
    assert (await h.request(sip(_with_expires("abc")))).status == 400
    long = await h.publish("alice", body, expires=100000)
    assert long.status == 200
    assert long.get("Expires") == "3600"


def _with_expires(value: str) -> str:
    body = pidf(f"sip:alice@{DOMAIN}", "open")
    return (
        f"PUBLISH sip:alice@{DOMAIN} SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx1\n"
        f"From: <sip:alice@{DOMAIN}>;tag=x\nTo: <sip:alice@{DOMAIN}>\n"
        "Call-ID: x@test\nCSeq: 1 PUBLISH\nEvent: presence\n"
        f"Expires: {value}\nContent-Type: application/pidf+xml\n\n{body}"
    )


async def test_initial_without_body_is_400(make: MakeHarness) -> None:
    h = await make()
    assert (await h.publish("alice")).status == 400


async def test_publication_expires_in_sweep(make: MakeHarness) -> None:
    h = await make()
    await h.publish("alice", pidf(f"sip:alice@{DOMAIN}", "open"), expires=120)
    h.clock.advance(121)
    await h.service.sweep()
    rows = await h.service.store.db.fetch("SELECT * FROM presentity")
    assert rows == []
