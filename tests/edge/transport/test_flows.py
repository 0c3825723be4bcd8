"""The flow table: lookup by id and peer, aliases, caps."""

from __future__ import annotations

from dataclasses import dataclass

from sipmesh.edge.transport.base import Flow
from sipmesh.edge.transport.flows import FlowTable, normalize_ip


@dataclass
class FakeConn:
    flow: Flow
    incoming: bool = True

    def write(self, data: bytes) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        raise AssertionError("not used")


def _conn(n: int, ip: str = "10.0.0.1", port: int = 5060, incoming: bool = True) -> FakeConn:
    return FakeConn(
        Flow("tcp", (ip, port + n), ("10.0.0.9", 5060), "tcp:0.0.0.0:5060", f"c{n}"), incoming
    )


def test_lookup_alias_and_remove() -> None:
    table = FlowTable(10, 0)
    a = _conn(1)
    table.add(a)
    assert table.get("c1") is a
    assert table.find("tcp", "10.0.0.1", 5061) is a
    assert table.find("tls", "10.0.0.1", 5061) is None
    assert table.add_alias("c1", "10.0.0.1", 5060)
    assert table.find("tcp", "10.0.0.1", 5060) is a
    assert not table.add_alias("nope", "10.0.0.1", 1)
    assert table.remove(a)
    assert not table.remove(a)
    assert table.find("tcp", "10.0.0.1", 5060) is None
    assert len(table) == 0


def test_caps() -> None:
    table = FlowTable(3, 2)
    table.add(_conn(1))
    table.add(_conn(2))
    assert table.per_source("10.0.0.1") == 2
    assert "per_source" in (table.refusal("10.0.0.1", incoming=True) or "")
    assert table.refusal("10.0.0.2", incoming=True) is None
    assert table.refusal("10.0.0.1", incoming=False) is None  # outgoing: only the total cap
    table.add(_conn(3, ip="10.0.0.2"))
    assert "tcp_max_connections (3)" in (table.refusal("10.0.0.3", incoming=False) or "")


def test_normalize_ip() -> None:
    assert normalize_ip("[0:0::1]") == "::1"
    assert normalize_ip("127.0.0.1") == "127.0.0.1"
    assert normalize_ip("Host.Example") == "host.example"
