"""TransportManager: listener parsing, addresses for Via, flows by id, uvloop."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sipmesh.edge.transport import TransportError, TransportManager, parse_listener
from sipmesh.runtime.sections.edge import EdgeConfig


def test_parse_listener() -> None:
    spec = parse_listener("TLS:[::]:5061")
    assert (spec.transport, spec.host, spec.port, spec.family) == (
        "tls",
        "::",
        5061,
        socket.AF_INET6,
    )
    assert parse_listener("udp:0.0.0.0:0").port == 0
    for bad in ("udp:example.com:5060", "http:0.0.0.0:80", "udp:1.2.3.4", "udp:1.2.3.4:70000"):
        with pytest.raises(TransportError, match=bad.split(":")[0]):
            parse_listener(bad)


def test_duplicate_listener_rejected(kit: Any) -> None:
    with pytest.raises(TransportError, match="twice"):
        TransportManager(["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"], kit.Sink(), EdgeConfig())


async def test_listeners_report_real_ports_and_sip_address(make_manager: Any) -> None:
    made = await make_manager(["udp:127.0.0.1:0", "tcp:[::1]:0", "ws:127.0.0.1:0"])
    infos = {i.transport: i for i in made.manager.listeners()}
    assert set(infos) == {"udp", "tcp", "ws"}
    assert all(i.port > 0 for i in infos.values())
    assert infos["tcp"].host == "::1"
    assert made.manager.sip_address("udp", socket.AF_INET) == ("127.0.0.1", infos["udp"].port)
    assert made.manager.sip_address("tcp", socket.AF_INET6) == ("::1", infos["tcp"].port)
    # No IPv4 tcp listener: the IPv6 one is what there is.
    assert made.manager.sip_address("tcp", socket.AF_INET) == ("::1", infos["tcp"].port)
    with pytest.raises(TransportError, match="no tls listener"):
        made.manager.sip_address("tls", socket.AF_INET)


async def test_advertise_overrides_the_bound_address(make_manager: Any) -> None:
    made = await make_manager(["udp:0.0.0.0:0", "tcp:127.0.0.1:0"], advertise="203.0.113.7")
    udp = made.port("udp")
    assert made.manager.sip_address("udp", socket.AF_INET) == ("203.0.113.7", udp)
    fixed = await make_manager(["udp:127.0.0.1:0"], advertise="sip.example.com:5080")
    assert fixed.manager.sip_address("udp", socket.AF_INET) == ("sip.example.com", 5080)


async def test_wildcard_listener_advertises_a_real_address(make_manager: Any) -> None:
    made = await make_manager(["udp:0.0.0.0:0"])
    host, _ = made.manager.sip_address("udp", socket.AF_INET)
    assert host != "0.0.0.0"
    socket.inet_aton(host)


async def test_flow_by_id(make_manager: Any) -> None:
    made = await make_manager(["udp:127.0.0.1:0"])
    flow = made.manager.flow("udp|udp:127.0.0.1:0|127.0.0.1|5062")
    assert flow is not None
    assert flow.remote == ("127.0.0.1", 5062)
    assert made.manager.flow("udp|udp:127.0.0.1:9|127.0.0.1|5062") is None  # no such listener
    assert made.manager.flow("tcp|conn|nothing") is None
    assert made.manager.flow("udp|garbage") is None


# The uvloop paths are exercised by every end-to-end test (tests/e2e: `sipmesh serve`
# runs on uvloop). A second event loop inside the test process, as a test here once
# did, could hang in Runner.close() beyond pytest-timeout's reach.
