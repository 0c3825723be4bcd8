"""The router's small parts: resolver, cfg store, tables snapshot, context blob, myself."""

from __future__ import annotations

import pytest

from sipmesh.router.cfgstore import CfgError, CfgStore, router_cfg_vars
from sipmesh.router.resolve import Hop, ResolveError, SimpleResolver
from sipmesh.router.tables import build_tables
from sipmesh.router.targets import Myself, Target, serial_groups
from sipmesh.router.txstate import TxState
from sipmesh.state.kv_memory import MemoryKV


async def test_simple_resolver_literals_names_and_failures() -> None:
    r = SimpleResolver(timeout=2.0)
    assert await r.resolve("sip:bob@192.0.2.1") == [Hop("udp", "192.0.2.1", 5060)]
    assert await r.resolve("sips:bob@[2001:db8::1]") == [Hop("tls", "2001:db8::1", 5061)]
    assert await r.resolve("sip:b@192.0.2.1:5070;transport=tcp") == [Hop("tcp", "192.0.2.1", 5070)]
    hops = await r.resolve("sip:bob@localhost:5080")
    assert hops
    assert all(h.port == 5080 and h.host in ("127.0.0.1", "::1") for h in hops)
    with pytest.raises(ResolveError) as err:
        await r.resolve("sip:bob@no-such-host.invalid")
    assert err.value.status in (404, 503)
    with pytest.raises(ResolveError) as err2:
        await r.resolve("tel:+123")
    assert err2.value.status == 416


async def test_cfg_values_are_shared_through_the_kv_store() -> None:
    kv = MemoryKV()
    one = CfgStore(kv, router_cfg_vars({"pstn.gw_ip": "192.0.2.1"}))
    two = CfgStore(kv, router_cfg_vars({"pstn.gw_ip": "192.0.2.1"}))
    assert two.get("pstn", "gw_ip") == "192.0.2.1"
    await one.set("pstn", "gw_ip", "192.0.2.2")
    assert one.get("pstn", "gw_ip") == "192.0.2.2"
    assert two.get("pstn", "gw_ip") == "192.0.2.1"  # until it refreshes
    await two.refresh()
    assert two.get("pstn", "gw_ip") == "192.0.2.2"
    assert ("voicemail", "srv_port", "5060") in two.values("voicemail")
    await two.reset("pstn", "gw_ip")
    await one.refresh()
    assert one.get("pstn", "gw_ip") == "192.0.2.1"
    with pytest.raises(CfgError):
        await one.set("pstn", "nope", "x")
    with pytest.raises(CfgError):
        one.values("nogroup")


def test_tables_snapshot_lookups() -> None:
    tables = build_tables(
        address_rows=[
            {"grp": 1, "ip_addr": "192.0.2.0", "mask": 24, "port": 0, "tag": "lan"},
            {"grp": 2, "ip_addr": "2001:db8::5", "mask": 32, "port": 5060, "tag": None},
            {"grp": 1, "ip_addr": "not-an-ip", "mask": 32, "port": 0, "tag": None},
        ],
        speed_dial_rows=[
            {
                "username": "alice",
                "domain": "Example.com",
                "sd_username": "21",
                "new_uri": "sip:b@x",
            }
        ],
        alias_rows=[
            {
                "alias_username": "rob",
                "alias_domain": "example.com",
                "username": "bob",
                "domain": "example.com",
            }
        ],
        domain_rows=[{"domain": "Other.Example"}],
    )
    assert tables.allow_source_address("192.0.2.77", 1234, 1) == "lan"
    assert tables.allow_source_address("192.0.3.1", 1234, 1) is None
    assert tables.allow_source_address("2001:db8::5", 5060, 2) == ""
    assert tables.allow_source_address("2001:db8::5", 5061, 2) is None
    assert tables.speed_dial_lookup("alice", "example.com", "21") == "sip:b@x"
    assert tables.speed_dial_lookup("carol", "example.com", "21") is None
    assert tables.alias_lookup("rob", "EXAMPLE.com") == ("bob", "example.com")
    assert tables.domains == frozenset({"other.example"})


def test_context_blob_round_trip_and_garbage() -> None:
    state = TxState(
        version="abc", flags=0b110, vars={"x": 1, "y": "z"}, failure="f", auth_user="al"
    )
    again = TxState.decode(state.encode())
    assert again == state
    assert TxState.decode(b"\xff not json") == TxState()
    assert TxState.decode(b'{"f": 99}') == TxState()


def test_myself_and_serial_groups() -> None:
    me = Myself(["Example.com", "192.0.2.1"], [5060])
    assert me.host_is_mine("example.COM.")
    assert me.host_is_mine("192.0.2.1", 5060)
    assert not me.host_is_mine("192.0.2.1", 5070)
    assert me.host_is_mine("203.0.113.5", None, local_ip="203.0.113.5")
    targets = [Target("sip:a@x", q=0.5), Target("sip:b@x", q=1.0), Target("sip:c@x")]
    serial_groups(targets)
    assert [t.group for t in targets] == [1, 0, 0]
