"""A failure route's new branches keep the request route's Record-Route.

Kamailio's record_route() edits the request itself, so branches a failure route adds
(voicemail, serial forking) are record-routed too; without it the dialog that
voicemail answers bypasses the proxy and its BYE gets "404 Not here" (found end to
end by tests/e2e/test_routing_features.py). The flag travels in the transaction's
context (TxState), so any router instance runs the failure route the same way.
"""

from __future__ import annotations

from typing import Any

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.registrar.api import Registrar
from sipmesh.router.testing import DOMAIN, route_request, sip_request
from sipmesh.router.txstate import TxState
from tests.router.test_default_script import authed_invite, failure_for, register


async def test_voicemail_branch_is_record_routed(make_router: Any, registrar: Registrar) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    decision = await failure_for(router, registrar, 486)
    assert decision.WhichOneof("action") == "relay"
    assert [t.uri for t in decision.relay.targets] == ["sip:bob@192.0.2.55:5060"]
    assert decision.relay.record_route
    assert TxState.decode(decision.context).record_route


async def test_record_route_state_round_trips() -> None:
    state = TxState(version="v", record_route=True, record_route_params=";nat=yes")
    again = TxState.decode(state.encode())
    assert (again.record_route, again.record_route_params) == (True, ";nat=yes")
    assert not TxState.decode(TxState(version="v").encode()).record_route


async def test_no_record_route_when_the_request_route_did_not_ask(
    make_router: Any, registrar: Registrar
) -> None:
    router = await make_router(features={"voicemail": True})
    await router.cfg_set("voicemail", "srv_ip", "192.0.2.55")
    await register(router, registrar, "bob", "sip:bob@192.0.2.20:5062")
    first = await authed_invite(router, f"sip:bob@{DOMAIN}")
    assert first.relay.record_route
    # The same failure with a context whose request route did not record-route.
    state = TxState.decode(first.context)
    state.record_route = False
    decision = await router.route(
        route_request(
            sip_request("INVITE", f"sip:bob@{DOMAIN}"),
            kind=router_pb2.ROUTE_KIND_FAILURE,
            context=state.encode(),
            handler="manage_failure",
            reply_status=486,
        )
    )
    assert decision.WhichOneof("action") == "relay"
    assert not decision.relay.record_route
