"""The default routing script (kamailio.cfg's routes), decision by decision."""

from __future__ import annotations

from typing import Any

from sipmesh.gen.sipmesh.v1 import common_pb2, registrar_pb2, router_pb2
from sipmesh.registrar.api import Registrar
from sipmesh.router.service import RouterService
from sipmesh.router.testing import (
    DOMAIN,
    answer_challenge,
    route_request,
    sip_request,
)
from sipmesh.router.txstate import TxState
from sipmesh.sip import Response, parse_message
from sipmesh.state.db import Database

Edit = common_pb2.HeaderEdit
PASSWORDS = {"alice": "alicepw", "bob": "bobpw"}


def status_of(decision: router_pb2.Decision) -> tuple[int, str]:
    assert decision.WhichOneof("action") == "reply", decision
    reply = decision.reply
    if reply.raw:
        parsed = parse_message(reply.raw)
        assert isinstance(parsed, Response)
        return parsed.status, parsed.reason
    return reply.code, reply.reason


async def register(router: RouterService, registrar: Registrar, user: str, contact: str) -> None:
    msg = sip_request(
        "REGISTER",
        f"sip:{DOMAIN}",
        from_uri=f"sip:{user}@{DOMAIN}",
        to_uri=f"sip:{user}@{DOMAIN}",
        headers=[("Contact", f"<{contact}>")],
    )
    first = await router.route(route_request(msg))
    assert status_of(first)[0] == 401
    again = answer_challenge(msg, first.reply.raw, user, PASSWORDS[user])
    second = await router.route(route_request(again))
    assert status_of(second) == (200, "OK")


async def authed_invite(router: RouterService, ruri: str, **kw: Any) -> router_pb2.Decision:
    msg = sip_request("INVITE", ruri, **kw)
    first = await router.route(route_request(msg))
    assert status_of(first)[0] == 407
    return await router.route(
        route_request(answer_challenge(msg, first.reply.raw, "alice", "alicepw"))
    )


async def test_register_goes_to_the_registrar_with_digest(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router()
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    found = await registrar.lookup(registrar_pb2.LookupRequest(aor=f"sip:bob@{DOMAIN}"))
    assert [b.contact for b in found.bindings] == ["sip:bob@192.0.2.20:5062"]


async def test_invite_from_unauthenticated_local_user_is_challenged(
    make_router: Any,
) -> None:
    router = await make_router()
    decision = await router.route(route_request(sip_request("INVITE", f"sip:bob@{DOMAIN}")))
    code, _ = status_of(decision)
    assert code == 407
    parsed = parse_message(decision.reply.raw)
    assert (parsed.get("Proxy-Authenticate") or "").startswith("Digest ")


async def test_foreign_to_foreign_is_not_relayed(make_router: Any) -> None:
    router = await make_router()
    msg = sip_request("INVITE", "sip:carol@elsewhere.test", from_uri="sip:mallory@evil.test")
    assert status_of(await router.route(route_request(msg))) == (403, "Not relaying")


async def test_unregistered_callee_gets_404(make_router: Any) -> None:
    router = await make_router()
    decision = await authed_invite(router, f"sip:bob@{DOMAIN}")
    assert status_of(decision) == (404, "Not Found")


async def test_registered_callee_is_relayed_to_its_contact_with_record_route(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router()
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    decision = await authed_invite(router, f"sip:bob@{DOMAIN}")
    assert decision.WhichOneof("action") == "relay"
    relay = decision.relay
    assert [t.uri for t in relay.targets] == ["sip:bob@192.0.2.20:5062"]
    assert relay.record_route
    assert relay.send_100
    assert relay.handlers.failure == "manage_failure"
    # Preloaded Route removed, credentials consumed.
    ops = [(e.op, e.name) for e in decision.edits]
    assert (Edit.OP_REMOVE, "Route") in ops
    assert (Edit.OP_REMOVE, "Proxy-Authorization") in ops
    assert decision.authenticated_user == "alice"
    # Accounting: INVITE (FLT_ACC) and missed calls via usrloc (FLT_ACCMISSED).
    assert decision.acc.acc
    assert decision.acc.missed
    assert not decision.acc.failed
    assert TxState.decode(decision.context).vars["oexten"] == "bob"


async def test_ip_authorised_source_skips_digest(make_router: Any, db: Database) -> None:
    await db.execute(
        "INSERT INTO address (grp, ip_addr, mask, port) VALUES (1, $1, 24, 0)", "192.0.2.0"
    )
    router = await make_router(features={"ipauth": True})
    decision = await router.route(route_request(sip_request("INVITE", f"sip:bob@{DOMAIN}")))
    assert status_of(decision) == (404, "Not Found")  # not challenged: straight to location
    other = await router.route(
        route_request(sip_request("INVITE", f"sip:bob@{DOMAIN}"), src=("203.0.113.9", 5060))
    )
    assert status_of(other)[0] == 407


async def test_pstn_number_goes_to_the_gateway_set_at_run_time(make_router: Any) -> None:
    router = await make_router(features={"pstn": True})
    # pstn.gw_ip not set yet: PSTN route is skipped, location answers.
    decision = await authed_invite(router, f"sip:+4930123456@{DOMAIN}")
    assert status_of(decision) == (404, "Not Found")
    await router.cfg_set("pstn", "gw_ip", "192.0.2.99")
    await router.cfg_set("pstn", "gw_port", "5080")
    decision = await authed_invite(router, f"sip:004930123456@{DOMAIN}")
    assert decision.WhichOneof("action") == "relay"
    assert [t.uri for t in decision.relay.targets] == ["sip:+4930123456@192.0.2.99:5080"]
    assert decision.ruri == "sip:+4930123456@192.0.2.99:5080"


async def test_pstn_only_for_local_callers(make_router: Any) -> None:
    router = await make_router(features={"pstn": True})
    await router.cfg_set("pstn", "gw_ip", "192.0.2.99")
    msg = sip_request("INVITE", f"sip:+4930123456@{DOMAIN}", from_uri="sip:x@elsewhere.test")
    assert status_of(await router.route(route_request(msg))) == (403, "Not Allowed")


async def test_speed_dial_and_alias(make_router: Any, registrar: Registrar, db: Database) -> None:
    await db.execute(
        "INSERT INTO speed_dial (username, domain, sd_username, sd_domain, new_uri)"
        " VALUES ('alice', $1, '21', $1, $2)",
        DOMAIN,
        f"sip:bob@{DOMAIN}",
    )
    await db.execute(
        "INSERT INTO dbaliases (alias_username, alias_domain, username, domain)"
        " VALUES ('robert', $1, 'bob', $1)",
        DOMAIN,
    )
    router = await make_router(features={"speeddial": True, "aliasdb": True})
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    for dialled in ("21", "robert"):
        decision = await authed_invite(router, f"sip:{dialled}@{DOMAIN}")
        assert decision.WhichOneof("action") == "relay", dialled
        assert [t.uri for t in decision.relay.targets] == ["sip:bob@192.0.2.20:5062"]


async def test_speed_dial_to_foreign_uri_goes_out(make_router: Any, db: Database) -> None:
    await db.execute(
        "INSERT INTO speed_dial (username, domain, sd_username, sd_domain, new_uri)"
        " VALUES ('alice', $1, '22', $1, 'sip:carol@192.0.2.77:5070')",
        DOMAIN,
    )
    router = await make_router(features={"speeddial": True})
    decision = await authed_invite(router, f"sip:22@{DOMAIN}")
    target = decision.relay.targets[0]
    assert target.uri == "sip:carol@192.0.2.77:5070"
    assert (target.destination.host, target.destination.port) == ("192.0.2.77", 5070)
    assert (Edit.OP_APPEND, "P-Hint", "outbound") in [
        (e.op, e.name, e.value) for e in decision.edits
    ]


async def failure_for(
    router: RouterService, registrar: Registrar, status: int, **kw: Any
) -> router_pb2.Decision:
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    first = await authed_invite(router, f"sip:bob@{DOMAIN}")
    assert first.relay.handlers.failure == "manage_failure"
    invite = sip_request("INVITE", f"sip:bob@{DOMAIN}")
    return await router.route(
        route_request(
            invite,
            kind=router_pb2.ROUTE_KIND_FAILURE,
            context=first.context,
            handler=first.relay.handlers.failure,
            reply_status=status,
            **kw,
        )
    )


async def test_block3xx_turns_a_redirect_into_404(make_router: Any, registrar: Registrar) -> None:
    router = await make_router(features={"block3xx": True})
    assert status_of(await failure_for(router, registrar, 302)) == (404, "Not found")


async def test_without_block3xx_a_redirect_goes_upstream(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router()
    assert (await failure_for(router, registrar, 302)).WhichOneof("action") == "proceed"


async def test_busy_goes_to_voicemail_in_the_failure_route(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    decision = await failure_for(router, registrar, 486)
    assert decision.WhichOneof("action") == "relay"
    assert [t.uri for t in decision.relay.targets] == ["sip:bob@192.0.2.55:5060"]
    # The voicemail server itself failing does not divert a second time.
    again = await router.route(
        route_request(
            sip_request("INVITE", f"sip:bob@{DOMAIN}"),
            kind=router_pb2.ROUTE_KIND_FAILURE,
            context=decision.context,
            handler="manage_failure",
            reply_status=486,
        )
    )
    assert again.WhichOneof("action") == "proceed"


async def test_no_answer_timeout_goes_to_voicemail(make_router: Any, registrar: Registrar) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    first = await authed_invite(router, f"sip:bob@{DOMAIN}")
    req = route_request(
        sip_request("INVITE", f"sip:bob@{DOMAIN}"),
        kind=router_pb2.ROUTE_KIND_FAILURE,
        context=first.context,
        handler="manage_failure",
    )
    req.failure_reason = router_pb2.FAILURE_REASON_TIMEOUT
    decision2 = await router.route(req)
    assert [t.uri for t in decision2.relay.targets] == ["sip:bob@192.0.2.55:5060"]


async def test_unregistered_callee_goes_to_voicemail_when_enabled(
    make_router: Any,
) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    decision = await authed_invite(router, f"sip:bob@{DOMAIN}")
    assert [t.uri for t in decision.relay.targets] == ["sip:bob@192.0.2.55:5060"]


async def test_in_dialog_requests(make_router: Any) -> None:
    router = await make_router()
    bye = sip_request(
        "BYE",
        "sip:bob@192.0.2.20:5062",
        to_tag="abc",
        headers=[("Route", "<sip:198.51.100.1;lr>"), ("Route", "<sip:192.0.2.200;lr>")],
    )
    decision = await router.route(route_request(bye))
    assert decision.WhichOneof("action") == "relay"
    assert [(e.op, e.value) for e in decision.edits] == [
        (Edit.OP_REMOVE_VALUE, "<sip:198.51.100.1;lr>")
    ]
    assert decision.acc.acc
    assert decision.acc.failed
    lost = sip_request("BYE", f"sip:bob@{DOMAIN}", to_tag="abc")
    assert status_of(await router.route(route_request(lost))) == (404, "Not here")
    ack = sip_request("ACK", f"sip:bob@{DOMAIN}", to_tag="abc")
    assert (await router.route(route_request(ack))).WhichOneof("action") == "drop"
    ack2 = sip_request(
        "ACK", "sip:bob@192.0.2.20", to_tag="abc", headers=[("Route", "<sip:198.51.100.1;lr>")]
    )
    forwarded = await router.route(route_request(ack2))
    assert forwarded.relay.stateless


async def test_cancel_without_transaction_is_dropped(make_router: Any) -> None:
    router = await make_router()
    decision = await router.route(route_request(sip_request("CANCEL", f"sip:bob@{DOMAIN}")))
    assert decision.WhichOneof("action") == "drop"


async def test_presence_off_answers_like_kamailio_without_with_presence(
    make_router: Any,
) -> None:
    router = await make_router()
    publish = sip_request("PUBLISH", f"sip:alice@{DOMAIN}", headers=[("Event", "presence")])
    first = await router.route(route_request(publish))
    assert status_of(first)[0] == 407
    authed = answer_challenge(publish, first.reply.raw, "alice", "alicepw")
    assert status_of(await router.route(route_request(authed))) == (404, "Not here")


async def test_auth_off_still_refuses_to_relay_to_foreign_domains(
    make_router: Any,
) -> None:
    router = await make_router(features={"auth": False})
    msg = sip_request("INVITE", "sip:carol@elsewhere.test")
    assert status_of(await router.route(route_request(msg))) == (403, "Not relaying")
    local = await router.route(route_request(sip_request("INVITE", f"sip:bob@{DOMAIN}")))
    assert status_of(local) == (404, "Not Found")


async def test_nat_marks_and_media_ops(make_router: Any, registrar: Registrar) -> None:
    router = await make_router(features={"nat": True})
    await register(router, registrar, "bob", "sip:bob@10.0.0.5:5062")
    msg = sip_request("INVITE", f"sip:bob@{DOMAIN}")
    first = await router.route(route_request(msg, nat=True))
    again = answer_challenge(msg, first.reply.raw, "alice", "alicepw")
    decision = await router.route(route_request(again, nat=True))
    handlers = decision.relay.handlers
    assert (handlers.branch, handlers.reply, handlers.failure) == (
        "manage_branch",
        "manage_reply",
        "manage_failure",
    )
    branch = await router.route(
        route_request(
            again,
            kind=router_pb2.ROUTE_KIND_BRANCH,
            context=decision.context,
            handler="manage_branch",
        )
    )
    assert branch.WhichOneof("action") == "proceed"
    assert [op.kind for op in branch.media_ops] == [router_pb2.MediaOp.KIND_MANAGE]


async def test_in_dialog_request_takes_the_flow_token_of_its_direction(make_router: Any) -> None:
    """Our Record-Route names the caller's and the callee's flows (services/edge/
    flowtoken.py); loose_route pops it and the target carries the token of the side
    the request goes to: the callee's for the caller's requests (From tag = ftag),
    the caller's for the callee's (RFC 5626 §5.3, rr's is_direction)."""
    router = await make_router()
    caller_tag = "c4ll3r"
    rr = f"<sip:198.51.100.1;lr;ftag={caller_tag};flow-caller=UP.tok;flow-callee=DN.tok>"
    from_caller = sip_request("BYE", "sip:bob@192.0.2.20:5062", to_tag="abc",
                              headers=[("Route", rr)])  # fmt: skip
    from_caller.set("From", f"<sip:alice@{DOMAIN}>;tag={caller_tag}")
    decision = await router.route(route_request(from_caller))
    assert [t.flow_token for t in decision.relay.targets] == ["DN.tok"]
    from_callee = sip_request("BYE", "sip:alice@192.0.2.10", from_uri=f"sip:bob@{DOMAIN}",
                              to_tag=caller_tag, headers=[("Route", rr)])  # fmt: skip
    decision = await router.route(route_request(from_callee))
    assert [t.flow_token for t in decision.relay.targets] == ["UP.tok"]
    ack = sip_request("ACK", "sip:bob@192.0.2.20:5062", to_tag="abc", headers=[("Route", rr)])
    ack.set("From", f"<sip:alice@{DOMAIN}>;tag={caller_tag}")
    forwarded = await router.route(route_request(ack))
    assert forwarded.relay.stateless
    assert [t.flow_token for t in forwarded.relay.targets] == ["DN.tok"]
    # A Route without flow parameters, or another proxy's: no token.
    plain = sip_request("BYE", "sip:bob@192.0.2.20:5062", to_tag="abc",
                        headers=[("Route", "<sip:198.51.100.1;lr>")])  # fmt: skip
    assert [t.flow_token for t in (await router.route(route_request(plain))).relay.targets] == [""]
