"""Anti-flood (pike + ipban) with real processes (issue 4, docs/edge.md Anti-flood).

A source that floods one edge is banned there, the ban reaches a second edge process
through the shared Redis within a sync interval, and other sources are served all the
while. 127.0.0.x addresses are distinct sources on loopback.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.edge_peers import UdpPeer, edge_process, options_ok, options_request
from tests.e2e.procs import SipmeshProcess

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres, pytest.mark.nats]
pytestmark += [pytest.mark.timeout(120)]


def flood(address: tuple[str, int], ip: str, count: int) -> int:
    """``count`` OPTIONS from ``ip`` as fast as possible; returns how many were answered."""
    peer = UdpPeer(ip)
    try:
        for _ in range(count):
            peer.send(options_request(peer.local), address)
        answered = 0
        while peer.recv(1.0) is not None:
            answered += 1
        return answered
    finally:
        peer.close()


def random_source() -> str:
    octets = (secrets.randbelow(200) + 20, secrets.randbelow(250) + 1, secrets.randbelow(250) + 1)
    return "127." + ".".join(map(str, octets))


def bans(proc: SipmeshProcess) -> float:
    for line in proc.metrics().splitlines():
        if line.startswith("sipmesh_antiflood_bans_total"):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def two_edges(
    workdir: Path, redis_url: str, postgres_url: str, nats_url: str, unique_prefix: str
) -> Iterator[tuple[SipmeshProcess, SipmeshProcess]]:
    """Two `--target edge` processes and one router+registrar, sharing Redis/PG/NATS."""
    shared = {
        "SIPMESH_STATE": redis_url,
        "SIPMESH_DB": postgres_url,
        "SIPMESH_BUS": nats_url,
        "SIPMESH_NAMESPACE": unique_prefix,
        "SIPMESH_EDGE__PIKE_LIMIT": "5",
        "SIPMESH_EDGE__BAN_TIME": "60",
    }
    core = edge_process(
        workdir,
        name="core",
        targets="router,registrar",
        transports=(),
        env=shared,
        provision=False,
    )
    endpoints = {
        **shared,
        "SIPMESH_ENDPOINTS__ROUTER": f"127.0.0.1:{core.grpc_port}",
        "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{core.grpc_port}",
    }
    procs = [core]
    try:
        for name in ("edge-a", "edge-b"):
            procs.append(
                edge_process(workdir, name=name, targets="edge", env=endpoints, provision=False)
            )
        yield procs[1], procs[2]
    finally:
        for proc in reversed(procs):
            proc.stop()


def flood_edge_a(edge_a: SipmeshProcess) -> tuple[str, str]:
    """Flood edge A from one source; returns (flooder, innocent) after checking A."""
    a = ("127.0.0.1", edge_a.sip_port)
    flooder, innocent = random_source(), random_source()
    assert options_ok(a, flooder), "not banned before the flood"
    answered = flood(a, flooder, 200)
    # pike_limit 5 per 2 s: the first few are answered, the rest dropped.
    assert answered <= 6, answered
    assert options_ok(a, innocent), "another source is served during the ban"
    assert not options_ok(a, flooder, timeout=1), "the flooder is banned on edge A"
    assert bans(edge_a) >= 1
    return flooder, innocent


def test_flood_is_banned_on_both_edges_others_served(
    two_edges: tuple[SipmeshProcess, SipmeshProcess],
) -> None:
    edge_a, edge_b = two_edges
    flooder, innocent = flood_edge_a(edge_a)
    b = ("127.0.0.1", edge_b.sip_port)
    # Edge B reads the ban keys of the sources it has seen (antiflood.py): once the
    # flooder has reached B, B drops it from the next ban sync on (0.5 s).
    options_ok(b, flooder, timeout=1)
    time.sleep(1.5)
    for _ in range(3):
        assert not options_ok(b, flooder, timeout=1), edge_b.log()
    assert bans(edge_b) == 0, "B took no ban of its own: it honours A's"
    assert options_ok(b, innocent), "edge B still serves other sources"


def test_ban_holds_on_second_edge_for_a_source_it_never_saw(
    two_edges: tuple[SipmeshProcess, SipmeshProcess],
) -> None:
    """Edge B learns the ban from the sipmesh.ban.added event (services/edge/banevents.py),
    so even the first request of the flooder to B is dropped."""
    edge_a, edge_b = two_edges
    flooder, _ = flood_edge_a(edge_a)
    time.sleep(1.5)  # three ban_sync_intervals after the ban
    assert not options_ok(("127.0.0.1", edge_b.sip_port), flooder, timeout=1)
