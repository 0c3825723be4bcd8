"""The REST API against a running in-process sipmesh: tokens, statuses, operations."""

from __future__ import annotations

import json

from sipmesh.admin.base import AUDIT_SUBJECT
from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.runtime.backends import BusModule
from sipmesh.state.bus import Message
from tests.admin.embedded import DOMAIN, READ, WRITE, Embedded, ahttp


async def test_tokens_no_token_401_read_only_403(admin: Embedded) -> None:
    api = admin.base + "/api/v1"
    status, body = await ahttp("GET", api + "/subscribers", token=None)
    assert status == 401
    assert body["message"] == "a valid bearer token is required"
    assert (await ahttp("GET", api + "/subscribers", token="wrong"))[0] == 401
    assert (await ahttp("GET", api + "/subscribers", token=READ))[0] == 200
    sub = {"username": "ro", "domain": DOMAIN, "password": "pw"}
    status, body = await ahttp("POST", api + "/subscribers", sub, token=READ)
    assert status == 403
    assert "only read" in body["message"]
    assert (await ahttp("DELETE", api + "/bans/10.0.0.1", token=READ))[0] == 403
    assert (await ahttp("POST", api + "/subscribers", sub, token=WRITE))[0] == 201


async def test_subscriber_statuses(admin: Embedded) -> None:
    api = admin.base + "/api/v1"
    sub = {"username": "alice", "domain": DOMAIN, "password": "secret"}
    status, body = await ahttp("POST", api + "/subscribers", sub)
    assert status == 201
    assert body["username"] == "alice"
    assert body["has_plaintext_password"] is False
    status, body = await ahttp("POST", api + "/subscribers", sub)
    assert (status, body["error"]) == (409, "CODE_ALREADY_EXISTS")
    assert (await ahttp("GET", api + f"/subscribers/{DOMAIN}/nobody"))[0] == 404
    status, body = await ahttp("POST", api + "/subscribers", {"username": "a b", "password": "x"})
    assert status == 400
    assert body["message"].startswith("username")
    status, body = await ahttp("POST", api + "/subscribers", {"username": 5})
    assert status == 400
    assert (await ahttp("POST", api + "/subscribers", {"nonsense": 1}))[0] == 400
    pw = {"password": "new"}
    assert (await ahttp("PUT", api + f"/subscribers/{DOMAIN}/alice/password", pw))[0] == 200
    assert (await ahttp("PUT", api + f"/subscribers/{DOMAIN}/bob/password", pw))[0] == 404
    status, body = await ahttp("GET", api + "/subscribers?filter=al")
    assert [s["username"] for s in body["subscribers"]] == ["alice"]
    assert (await ahttp("DELETE", api + f"/subscribers/{DOMAIN}/alice"))[0] == 200
    assert (await ahttp("DELETE", api + f"/subscribers/{DOMAIN}/alice"))[0] == 404


async def test_writes_are_audited_on_the_bus(admin: Embedded) -> None:
    bus = admin.runtime.get("bus", BusModule).bus
    seen: list[events_pb2.Envelope] = []

    async def on_audit(message: Message) -> None:
        env = events_pb2.Envelope()
        env.ParseFromString(message.data)
        seen.append(env)

    sub = await bus.subscribe(AUDIT_SUBJECT, on_audit)
    try:
        body = {"username": "carol", "domain": DOMAIN, "password": "pw"}
        await ahttp("POST", admin.base + "/api/v1/subscribers", body)
        await ahttp("POST", admin.base + "/api/v1/subscribers", body)
    finally:
        await sub.stop()
    assert [(e.audit.operation, e.audit.ok) for e in seen] == [
        ("subscriber.add", True),
        ("subscriber.add", False),
    ]
    first = seen[0].audit
    assert first.actor == "token:write"
    assert first.target == f"carol@{DOMAIN}"
    assert first.arguments["password"] == "***"
    assert first.remote.startswith("127.0.0.1:")


async def test_tables_bans_cfg_and_live_operations(admin: Embedded) -> None:
    api = admin.base + "/api/v1"
    ds = {"setid": 1, "destination": "sip:10.0.0.9:5060", "description": "gw"}
    assert (await ahttp("POST", api + "/dispatcher", ds))[0] == 201
    assert (await ahttp("POST", api + "/dispatcher", ds))[0] == 409
    state = {"setid": 1, "destination": ds["destination"], "state": "DISPATCHER_STATE_DISABLED"}
    assert (await ahttp("PUT", api + "/dispatcher/state", state))[0] == 200
    _, listed = await ahttp("GET", api + "/dispatcher?setid=1")
    assert listed["destinations"][0]["state"] == "DISPATCHER_STATE_DISABLED"
    status, body = await ahttp("POST", api + "/address", {"grp": 1, "ip_addr": "not-an-ip"})
    assert status == 400
    assert "IP address" in body["message"]
    assert (await ahttp("POST", api + "/address", {"grp": 1, "ip_addr": "192.0.2.1"}))[0] == 201
    assert (await ahttp("POST", api + "/bans", {"ip": "198.51.100.7", "duration": 30}))[0] == 201
    _, bans = await ahttp("GET", api + "/bans")
    assert [b["ip"] for b in bans["bans"]] == ["198.51.100.7"]
    assert (await ahttp("DELETE", api + "/bans/198.51.100.7"))[0] == 200
    assert (await ahttp("DELETE", api + "/bans/198.51.100.7"))[0] == 404
    cfg = {"group": "pstn", "name": "gw_ip", "text": "192.0.2.50"}
    assert (await ahttp("PUT", api + "/cfg", cfg))[0] == 200
    _, values = await ahttp("GET", api + "/cfg?group=pstn&name=gw_ip")
    assert values["values"] == [{"group": "pstn", "name": "gw_ip", "text": "192.0.2.50"}]
    assert (await ahttp("PUT", api + "/cfg", {"group": "no", "name": "such"}))[0] == 404
    rule = {
        "dpid": 1,
        "pr": 1,
        "match_op": "MATCH_OP_REGEX",
        "match_exp": "^0(.*)$",
        "subst_exp": "^0(.*)$",
        "repl_exp": "+49\\1",
        "attrs": "de",
    }
    assert (await ahttp("POST", api + "/dialplan", rule))[0] == 201
    _, out = await ahttp("GET", api + "/dialplan/translate?dpid=1&input=0301234")
    assert (out["matched"], out["output"]) == (True, "+49301234")
    bad = {**rule, "match_exp": "("}
    assert (await ahttp("POST", api + "/dialplan", bad))[0] == 400
    _, reload = await ahttp("POST", api + "/reload", {"what": "all"})
    assert [r["instance"] for r in reload["results"]] == ["embedded-1"]
    assert reload["results"][0]["ok"] is True
    _, stats = await ahttp("GET", api + "/stats?group=usrloc")
    assert "usrloc:registered_contacts" in stats["totals"]
    assert stats["missing_instances"] == []


async def test_location_through_the_registrar(admin: Embedded) -> None:
    api = admin.base + "/api/v1"
    binding = {"aor": f"dave@{DOMAIN}", "contact": "sip:dave@192.0.2.8:5060", "expires": 60}
    assert (await ahttp("POST", api + "/location", binding))[0] == 201
    _, shown = await ahttp("GET", api + f"/location?aor=dave@{DOMAIN}")
    assert [b["contact"] for b in shown["bindings"]] == ["sip:dave@192.0.2.8:5060"]
    bad = {**binding, "contact": "not a uri"}
    assert (await ahttp("POST", api + "/location", bad))[0] == 400
    assert (await ahttp("DELETE", api + f"/location?aor=dave@{DOMAIN}"))[0] == 200
    _, shown = await ahttp("GET", api + f"/location?aor=dave@{DOMAIN}")
    assert shown["bindings"] == []


async def test_openapi_and_console_are_served(admin: Embedded) -> None:
    status, doc = await ahttp("GET", admin.base + "/api/v1/openapi.json", token=None)
    assert status == 200
    assert "/api/v1/subscribers" in doc["paths"]
    assert json.dumps(doc).count("bearer") >= 1
