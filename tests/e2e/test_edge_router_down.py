"""With the router stopped, the edge answers 503 + Retry-After within router_timeout.

Split processes (issue 4 §5): the edge runs alone with endpoints.router pointing at a
router+registrar process, which the test kills (SIGKILL: no goodbye on the stream).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.e2e.edge_peers import DOMAIN, UdpPeer, edge_process, options_ok
from tests.e2e.procs import SipmeshProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROUTER_TIMEOUT = 2.0


def invite(peer: UdpPeer) -> bytes:
    host, port = peer.local
    return (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:carol@elsewhere.example>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:carol@{host}:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def final_status(edge: SipmeshProcess) -> tuple[int, str | None]:
    """An INVITE through the edge: its final status and Retry-After.

    The wait for it is bounded by router_timeout plus a margin for a loaded machine:
    no final answer within it fails the test (no separate timing assertion).
    """
    peer = UdpPeer()
    try:
        peer.send(invite(peer), ("127.0.0.1", edge.sip_port))
        while True:
            response = peer.response(ROUTER_TIMEOUT + 5)
            assert response is not None, "never silence (docs/edge.md)"
            if response.status >= 200:
                return response.status, response.get("Retry-After")
    finally:
        peer.close()


def test_router_killed_gives_503_within_router_timeout(workdir: Path) -> None:
    shared = {"SIPMESH_DB": f"sqlite:///{workdir / 'shared.sqlite'}"}
    router = edge_process(
        workdir, name="router", targets="router,registrar", transports=(), env=shared
    )
    edge = edge_process(
        workdir,
        name="edge",
        targets="edge",
        env={
            **shared,
            "SIPMESH_ENDPOINTS__ROUTER": f"127.0.0.1:{router.grpc_port}",
            "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{router.grpc_port}",
            "SIPMESH_EDGE__ROUTER_TIMEOUT": str(ROUTER_TIMEOUT),
        },
        provision=False,
    )
    try:
        status, _ = final_status(edge)
        assert status == 404, "with the router up, bob (not registered) is not found"
        router.kill()
        for _ in range(2):  # the first after the kill and one more on a dead stream
            status, retry = final_status(edge)
            assert status == 503, edge.log()
            assert retry is not None, "503 carries Retry-After"
        assert options_ok(("127.0.0.1", edge.sip_port)), "OPTIONS to the edge needs no router"
    finally:
        edge.stop()
        router.kill()
