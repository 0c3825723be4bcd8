"""Digest authentication of REGISTER (auth + auth_db) on memory and the real Redis."""

from __future__ import annotations

from sipmesh.bans import BanList
from sipmesh.registrar.core import SourceFacts
from sipmesh.registrar.subscribers import credential_columns
from sipmesh.registrar.testing import DOMAIN, MakeService, TestUA, add_subscriber, challenges_of
from sipmesh.sip.digest import build_credentials
from sipmesh.sip.fields import format_auth_params
from sipmesh.state.clock import FakeClock

AOR = f"alice@{DOMAIN}"
FACTS = SourceFacts(remote_host="198.51.100.7", remote_port=5060, transport="udp")
CONTACT = ["<sip:alice@192.0.2.10>"]


async def test_challenge_then_200(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    first = await reg.save(ua.register(CONTACT), FACTS)
    assert first.response.status == 401
    (challenge,) = challenges_of(first.response)  # MD5 only: no SHA-256 HA1 stored
    assert (challenge.realm, challenge.algorithm, challenge.qop) == (DOMAIN, "MD5", ("auth",))
    second = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert second.response.status == 200
    assert second.authenticated_user == AOR
    assert [b.contact for b in await reg.store.get(AOR)] == ["sip:alice@192.0.2.10"]


async def test_sha256_offered_first_when_verifiable(make_service: MakeService) -> None:
    reg = await make_service(calculate_ha1=True)
    await reg.db.execute(
        "INSERT INTO subscriber (username, domain, password) VALUES ($1, $2, $3)",
        "alice",
        DOMAIN,
        "pw",
    )
    ua = TestUA(AOR, "pw")
    challenges = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    ok = await reg.save(ua.register(CONTACT, challenge=challenges[0]), FACTS)
    assert ok.response.status == 200


async def test_wrong_password_challenges_again_or_403(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    again = await reg.save(ua.register(CONTACT, challenge=challenge, password="nope"), FACTS)
    assert again.response.status == 401
    assert await reg.store.get(AOR) == []

    strict = await make_service(wrong_credentials_reply="forbidden")
    (challenge,) = challenges_of((await strict.save(ua.register(CONTACT), FACTS)).response)
    denied = await strict.save(ua.register(CONTACT, challenge=challenge, password="x"), FACTS)
    assert denied.response.status == 403


async def test_unknown_user_looks_like_a_wrong_password(make_service: MakeService) -> None:
    reg = await make_service()
    ua = TestUA(f"ghost@{DOMAIN}", "pw")
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    res = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert res.response.status == 401


async def test_source_lockout_bans_the_source(make_service: MakeService) -> None:
    reg = await make_service(lockout_source_failures=3, lockout_time=120)
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    statuses = []
    for _ in range(3):
        (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
        res = await reg.save(ua.register(CONTACT, challenge=challenge, password="bad"), FACTS)
        statuses.append(res.response.status)
    assert statuses == [401, 401, 403]
    bans = BanList(reg.kv)
    assert await bans.is_banned("198.51.100.7")
    assert [b.reason for b in await bans.list()] == ["auth lockout"]
    assert not await bans.is_banned("198.51.100.8")


async def test_user_lockout_refuses_even_the_right_password(make_service: MakeService) -> None:
    reg = await make_service(lockout_source_failures=0, lockout_user_failures=2)
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    for i in range(2):
        facts = SourceFacts(remote_host=f"203.0.113.{i + 1}")
        (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), facts)).response)
        await reg.save(ua.register(CONTACT, challenge=challenge, password="bad"), facts)
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    res = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert res.response.status == 403
    assert "locked" in res.response.reason


async def test_replayed_nonce_count_rejected_on_another_instance(
    make_service: MakeService,
) -> None:
    one = await make_service()
    two = await make_service()  # shares the kv (Redis: another connection pool)
    await add_subscriber(one.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    (challenge,) = challenges_of((await one.save(ua.register(CONTACT), FACTS)).response)
    request = ua.register(CONTACT, challenge=challenge)
    # The nonce issued by instance one verifies on instance two (shared secret).
    assert (await two.save(request, FACTS)).response.status == 200
    replay = await one.save(request, FACTS)
    assert replay.response.status == 401
    # The next nc on the same nonce is fine (RFC 7616 §3.4).
    assert (await one.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200


async def test_nonce_secret_reshared_after_the_store_lost_it(make_service: MakeService) -> None:
    """Redis restarted empty, then a new instance: the running one adopts its secret."""
    from sipmesh.registrar.service import NONCE_SECRET_KEY

    one = await make_service()
    await add_subscriber(one.db, "alice", DOMAIN, "secret")
    await one.kv.delete(NONCE_SECRET_KEY)  # what an empty Redis after a restart shows
    two = await make_service()  # stores a secret of its own
    ua = TestUA(AOR, "secret")
    (challenge,) = challenges_of((await two.save(ua.register(CONTACT), FACTS)).response)
    # Instance one verifies the other's nonce (it reads the shared secret again) ...
    assert (await one.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200
    # ... and signs with it from then on.
    (challenge,) = challenges_of((await one.save(ua.register(CONTACT), FACTS)).response)
    assert (await two.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200
    # The timer puts a running instance's secret back into an emptied store.
    await one.kv.delete(NONCE_SECRET_KEY)
    await one.timer_tick()
    three = await make_service()
    (challenge,) = challenges_of((await three.save(ua.register(CONTACT), FACTS)).response)
    assert (await two.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200


async def test_stale_nonce_gets_stale_true(make_service: MakeService, clock: FakeClock) -> None:
    reg = await make_service(nonce_expire=30)
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret")
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    clock.advance(31)
    res = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert res.response.status == 401
    (fresh,) = challenges_of(res.response)
    assert fresh.stale
    assert fresh.nonce != challenge.nonce
    assert (await reg.save(ua.register(CONTACT, challenge=fresh), FACTS)).response.status == 200


async def test_auth_user_must_match_aor_unless_aliased(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "bob", DOMAIN, "bobpw")
    # bob authenticates but registers alice's AOR.
    ua = TestUA(AOR, "bobpw", username="bob")
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    res = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert res.response.status == 403
    await reg.db.execute(
        "INSERT INTO dbaliases (alias_username, alias_domain, username, domain) "
        "VALUES ($1, $2, $3, $4)",
        "alice",
        DOMAIN,
        "bob",
        DOMAIN,
    )
    res = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert res.response.status == 200


async def test_ha1b_username_with_domain(make_service: MakeService) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    ua = TestUA(AOR, "secret", username=AOR)  # digest username "alice@example.com"
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    assert (await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200


async def test_password_change_is_effective_for_the_next_register(
    make_service: MakeService,
) -> None:
    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "old")
    ua = TestUA(AOR, "old")
    (challenge,) = challenges_of((await reg.save(ua.register(CONTACT), FACTS)).response)
    assert (await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200
    cols = credential_columns("alice", DOMAIN, "new", store_password=False, sha256=False)
    await reg.db.execute(
        "UPDATE subscriber SET ha1 = $1, ha1b = $2 WHERE username = $3",
        cols["ha1"],
        cols["ha1b"],
        "alice",
    )
    old = await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)
    assert old.response.status == 401
    ua.password = "new"
    assert (await reg.save(ua.register(CONTACT, challenge=challenge), FACTS)).response.status == 200


async def test_proxy_authorize_uses_407_and_from(make_service: MakeService) -> None:
    from sipmesh.registrar.auth import AuthResult
    from sipmesh.sip.message import Request

    reg = await make_service()
    await add_subscriber(reg.db, "alice", DOMAIN, "secret")
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKinv1"),
        ("From", f"<sip:{AOR}>;tag=1"),
        ("To", "<sip:bob@example.com>"),
        ("Call-ID", "inv-1"),
        ("CSeq", "1 INVITE"),
        ("Content-Length", "0"),
    ]
    invite = Request("INVITE", "sip:bob@example.com", headers)
    first = await reg.authorize(invite, FACTS)
    assert first.result is AuthResult.CHALLENGE
    assert first.response is not None
    assert first.response.status == 407
    (challenge,) = challenges_of(first.response)
    creds = build_credentials(
        challenge, username="alice", password="secret", method="INVITE", uri="sip:bob@example.com"
    )
    invite.add("Proxy-Authorization", format_auth_params("Digest", creds.to_params()))
    ok = await reg.authorize(invite, FACTS)
    assert ok.result is AuthResult.OK
    assert (ok.user, ok.domain) == ("alice", DOMAIN)
    assert ok.header == "Proxy-Authorization"
