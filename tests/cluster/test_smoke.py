"""Smoke test of the cluster harness: the compose topology as local processes.

Starts whatever of docker-compose.yml can run today (targets still being written
are reported, not skipped), checks each running process's probes, a SIP answer
through both edges, a crashed router replaced while the other keeps serving, and
graceful SIGTERM shutdown of everything.
"""

from __future__ import annotations

import importlib.util
import secrets
import socket
import urllib.request

import pytest

from sipmesh.runtime.config import TARGETS
from tests.cluster.harness import Cluster, Instance

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nats]


def _built(target: str) -> bool:
    """Whether the build has the target's module (what `serve --target` imports)."""
    package = "sipmesh." + target.replace("-", "_")
    try:
        return importlib.util.find_spec(package + ".module") is not None
    except ModuleNotFoundError:
        return False


def _options(instance: Instance) -> bytes:
    """Send one OPTIONS to the edge over UDP and return the first response."""
    port = instance.sip_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        local = sock.getsockname()[1]
        call_id = secrets.token_hex(8)
        request = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@localhost>;tag={call_id[:6]}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: {call_id}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), ("127.0.0.1", port))
        while True:
            data, _ = sock.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 1"):  # skip provisional responses
                return data


def test_compose_topology_runs_as_local_processes(cluster: Cluster) -> None:
    cluster.start()
    print("\n" + cluster.report())
    running = cluster.running()
    if not running:
        pytest.xfail(f"no sipmesh process can run yet; missing: {cluster.missing_targets}")

    # The report is the truth: exactly the targets without a module are missing.
    not_built = sorted(t for t in TARGETS if not _built(t))
    assert cluster.missing_targets == not_built
    for instance in cluster.all_instances():
        if _built(instance.target):
            assert instance.status == "running", cluster.report()

    for instance in running:
        status, body = instance.ready()
        assert status == 200
        assert body["instance"] == instance.env["SIPMESH_INSTANCE_ID"]
        url = f"http://127.0.0.1:{instance.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200

    edges = [i for i in running if i.target == "edge"]
    routers = [i for i in running if i.target == "router"]
    if edges and routers:
        # Both edges answer SIP through a router, as a UA behind each port would see.
        for edge in edges:
            reply = _options(edge)
            assert reply.startswith(b"SIP/2.0 "), reply[:80]
            assert b"CSeq: 1 OPTIONS" in reply

    if len(routers) >= 2:
        # One router crashes: the other keeps answering, the edges stay up, and the
        # crashed one comes back on the same ports.
        assert cluster.kill("router", 1) != 0
        assert routers[1].ready()[0] == 200
        for edge in edges:
            assert edge.alive()
            assert _options(edge).startswith(b"SIP/2.0 ")
        assert cluster.restart("router", 1, graceful=False).status == "running"

    # Graceful stop: every process drains and exits 0 on SIGTERM.
    codes = cluster.stop()
    assert codes
    assert all(codes[i.name] == 0 for i in running), codes
