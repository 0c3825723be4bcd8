"""LCR: longest prefix, priority, weights, stopper, From/R-URI/method rules,
prefix/strip/tag per gateway, failover across gateways through the failure route."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sipmesh.router.lcr import LcrLoadError, build_lcr
from sipmesh.router.testing import sip_request
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate
from tests.router.lbhelpers import decide, fail, invite, start_router, write_script


def gw(id: int, ip: str, **kw: Any) -> dict[str, Any]:
    return {"id": id, "lcr_id": kw.pop("lcr_id", 1), "gw_name": f"gw{id}", "ip_addr": ip, **kw}


def rule(id: int, prefix: str | None, **kw: Any) -> dict[str, Any]:
    return {"id": id, "lcr_id": kw.pop("lcr_id", 1), "prefix": prefix, "enabled": 1, **kw}


def target(rule_id: int, gw_id: int, priority: int = 1, weight: int = 1) -> dict[str, Any]:
    return {"rule_id": rule_id, "gw_id": gw_id, "priority": priority, "weight": weight}


GWS = [gw(1, "10.0.0.1", port=5060), gw(2, "10.0.0.2"), gw(3, "10.0.0.3"), gw(4, "10.0.0.4")]


def names(selected: list[Any]) -> list[str]:
    return [s.gw.name for s in selected]


def test_longest_prefix_first_then_priority() -> None:
    lcr = build_lcr(
        GWS,
        [rule(1, "49"), rule(2, "4930"), rule(3, "")],
        [target(1, 1), target(2, 2, priority=2), target(2, 3, priority=1), target(3, 4)],
    )
    # 4930 (gw3 before gw2 by priority), then 49 (gw1), then the catch-all (gw4).
    assert names(lcr.load_gws(1, "4930123")) == ["gw3", "gw2", "gw1", "gw4"]
    assert names(lcr.load_gws(1, "4940123")) == ["gw1", "gw4"]
    assert names(lcr.load_gws(1, "1555")) == ["gw4"]
    assert lcr.load_gws(2, "4930123") == []  # another lcr instance


def test_gateway_keeps_its_longest_prefix_place_and_stopper_ends_search() -> None:
    lcr = build_lcr(
        GWS,
        [rule(1, "4"), rule(2, "44", stopper=1), rule(3, "4412")],
        [target(1, 1), target(2, 2), target(3, 1), target(1, 3)],
    )
    # gw1 comes through 4412 (longest); 44 stops the search: the "4" rule's gw3 is not used.
    assert names(lcr.load_gws(1, "44123")) == ["gw1", "gw2"]
    assert sorted(names(lcr.load_gws(1, "4512"))) == ["gw1", "gw3"]  # same rank: by weight


def test_from_uri_request_uri_and_method_patterns() -> None:
    lcr = build_lcr(
        GWS,
        [
            rule(1, "1", from_uri=r"@premium\.example\.com"),
            rule(2, "1", from_uri="^sip:.*"),
            rule(3, "1", request_uri=";user=phone", method="MESSAGE"),
            rule(4, "2", method="INVITE|BYE"),
        ],
        [target(1, 1), target(2, 2), target(3, 3), target(4, 4)],
    )

    def got(selected: list[Any]) -> list[str]:
        return sorted(names(selected))  # one rank: order by weight

    premium, plain = "sip:bob@PREMIUM.example.com", "sip:bob@example.com"
    assert got(lcr.load_gws(1, "1555", premium)) == ["gw1", "gw2"]  # case-insensitive
    assert got(lcr.load_gws(1, "1555", plain)) == ["gw2"]
    assert got(lcr.load_gws(1, "1555", plain, "sip:1555@x;user=phone", "MESSAGE")) == ["gw2", "gw3"]
    assert got(lcr.load_gws(1, "1555", plain, "sip:1555@x;user=phone", "INVITE")) == ["gw2"]
    assert got(lcr.load_gws(1, "2", method="OPTIONS")) == []


def test_defunct_gateway_and_disabled_rule_are_skipped() -> None:
    lcr = build_lcr(
        [gw(1, "10.0.0.1", defunct=2_000_000_000), gw(2, "10.0.0.2")],
        [rule(1, "1"), rule(2, "12", enabled=0)],
        [target(1, 1), target(1, 2), target(2, 2)],
    )
    assert names(lcr.load_gws(1, "123", now=1_000_000_000)) == ["gw2"]
    assert sorted(names(lcr.load_gws(1, "123", now=2_000_000_001))) == ["gw1", "gw2"]
    assert lcr.rule_count == 1


def test_weights_share_gateways_of_one_priority() -> None:
    lcr = build_lcr(GWS, [rule(1, "")], [target(1, 1, weight=3), target(1, 2, weight=1)])
    rng = random.Random(7)
    first = Counter(lcr.load_gws(1, "5", rng=rng.random)[0].gw.name for _ in range(4000))
    # weight*rand ordering: P(gw1 first) = 1 - 1/(2*3) = 5/6.
    assert abs(first["gw1"] / 4000 - 5 / 6) < 0.03


def test_prefix_strip_tag_and_uri_forms() -> None:
    lcr = build_lcr(
        [
            gw(1, "10.0.0.1", port=5080, strip=2, prefix="0049", tag="carrierA", transport=2),
            gw(2, "10.0.0.2", hostname="sip.carrier.example", uri_scheme=2, params=";foo=bar"),
            gw(3, "2001:db8::1"),
        ],
        [rule(1, "")],
        [target(1, 1), target(1, 2, 2), target(1, 3, 3)],
    )
    g1, g2, g3 = (s.gw for s in lcr.load_gws(1, "4930123"))
    assert g1.target("4930123") == ("sip:004930123@10.0.0.1:5080;transport=tcp", "")
    assert g1.tag == "carrierA"
    assert g2.target("4930123") == ("sips:4930123@sip.carrier.example;foo=bar", "sips:10.0.0.2")
    assert g3.target("1") == ("sip:1@[2001:db8::1]", "")


def test_bad_pattern_refuses_the_load() -> None:
    with pytest.raises(LcrLoadError, match="lcr_rule 1 from_uri"):
        build_lcr(GWS, [rule(1, "1", from_uri="(")], [])


def test_lookup_uses_the_index_not_a_scan() -> None:
    # 50 000 rules of distinct prefixes: the lookup probes one key per prefix length.
    rules = [rule(i, f"{1000000 + i}") for i in range(1, 50_001)]
    lcr = build_lcr(GWS, rules, [target(i, 1 + i % 4) for i in range(1, 50_001)])
    assert lcr.indexes[1].lengths == (7,)
    assert names(lcr.load_gws(1, "1012345999")) == ["gw2"]  # rule 12345 -> gw 1 + 12345 % 4


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    database = await open_db(f"sqlite:///{tmp_path / 'lcr.sqlite'}")
    await migrate(database)
    yield database
    await database.close()


async def fill(db: Database) -> None:
    for g in [
        gw(1, "10.0.0.1", strip=1, prefix="00", tag="cheap"),
        gw(2, "10.0.0.2", port=5070),
        gw(3, "10.0.0.3", tag="last"),
    ]:
        await db.execute(
            "INSERT INTO lcr_gw (id, lcr_id, gw_name, ip_addr, port, strip, prefix, tag, flags) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
            g["id"],
            1,
            g["gw_name"],
            g["ip_addr"],
            g.get("port"),
            g.get("strip", 0),
            g.get("prefix"),
            g.get("tag"),
        )
    await db.execute(
        "INSERT INTO lcr_rule (id, lcr_id, prefix, stopper, enabled) VALUES (1, 1, '49', 0, 1)"
    )
    await db.execute(
        "INSERT INTO lcr_rule (id, lcr_id, prefix, stopper, enabled, method) "
        "VALUES (2, 1, '4930', 0, 1, 'INVITE')"
    )
    for rule_id, gw_id, prio in [(2, 1, 1), (2, 2, 2), (1, 3, 1)]:
        await db.execute(
            "INSERT INTO lcr_rule_target (lcr_id, rule_id, gw_id, priority, weight) "
            "VALUES (1, $1, $2, $3, 1)",
            rule_id,
            gw_id,
            prio,
        )


SCRIPT = """
def request_route(ctx):
    if not ctx.lcr.load_gws(1) or not ctx.lcr.next_gw():
        ctx.reply(404, "No route")
        return
    ctx.t_on_failure("next_gateway")
    ctx.append_hf("X-Gw", ctx.vars["lcr_gw"] + "/" + ctx.vars["lcr_tag"])
    ctx.relay()


def next_gateway(ctx):
    if ctx.t_is_canceled() or not ctx.lcr.should_failover():
        return
    if ctx.lcr.next_gw():
        ctx.relay()
"""


async def test_failover_across_gateways_on_503(db: Database, tmp_path: Path) -> None:
    await fill(db)
    router = await start_router(db, write_script(tmp_path, SCRIPT))
    try:
        msg = invite("sip:4930555@example.com")
        first = await decide(router, msg)
        assert first.ruri == "sip:00930555@10.0.0.1"  # strip 1, prefix 00
        assert [(e.name, e.value) for e in first.edits] == [("X-Gw", "gw1/cheap")]
        second = await fail(router, msg, first, [503])
        assert second.ruri == "sip:4930555@10.0.0.2:5070"
        third = await fail(router, msg, second, [503, 503])
        assert third.ruri == "sip:4930555@10.0.0.3"  # the shorter prefix's gateway
        # No gateway left: the failure route ends without relaying (best reply goes up).
        last = await fail(router, msg, third, [503, 503, 503])
        assert last.WhichOneof("action") == "proceed"
        # 486 Busy is an answer, not a gateway failure: no failover.
        busy = await fail(router, msg, first, [486])
        assert busy.WhichOneof("action") == "proceed"
        # MESSAGE does not match the INVITE-only 4930 rule: only the 49 rule's gateway.
        m = await decide(router, sip_request("MESSAGE", "sip:4930555@example.com"))
        assert m.ruri == "sip:4930555@10.0.0.3"
        # Reload: a new cheapest gateway for 4930 is used by the next call.
        await db.execute("UPDATE lcr_rule_target SET priority = 9 WHERE gw_id = 1")
        assert (await router.reload(what="lcr")).ok
        again = await decide(router, invite("sip:4930555@example.com"))
        assert again.ruri == "sip:4930555@10.0.0.2:5070"
    finally:
        await router.stop(0)
