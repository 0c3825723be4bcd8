"""Full calls between two sipp user agents through the edge (UDP, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket

import pytest

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import Request, parse_message

from .conftest import FakeRouter, start_edge, udp_port

pytestmark = [pytest.mark.sipp, pytest.mark.slow]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_calls_between_sipp_uac_and_uas(tmp_path: object) -> None:
    assert shutil.which("sipp"), "sipp is required for this test"
    uas_port = free_udp_port()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        msg = parse_message(req.message.raw)
        assert isinstance(msg, Request)
        # sipp's built-in uac sends ACK and BYE to the proxy's address without a
        # route set, so this router sends everything to the UAS (ACK statelessly).
        target = router_pb2.Target(uri=f"sip:service@127.0.0.1:{uas_port}")
        relay = router_pb2.Relay(
            targets=[target], record_route=msg.method == "INVITE", stateless=msg.method == "ACK"
        )
        return router_pb2.Decision(relay=relay)

    router = FakeRouter(decide)
    edge = await start_edge(router, trusted_sources=["127.0.0.1"])
    uas = await asyncio.create_subprocess_exec(
        "sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-m", "5",
        "-nostdin", "-timeout", "30",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.3)  # let the UAS bind
        uac = await asyncio.create_subprocess_exec(
            "sipp", "-sn", "uac", f"127.0.0.1:{udp_port(edge)}", "-i", "127.0.0.1",
            "-p", str(free_udp_port()), "-s", "service", "-m", "5", "-r", "5", "-l", "2",
            "-d", "100", "-nostdin", "-timeout", "30", "-timeout_error",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(uac.communicate(), 60)
        assert uac.returncode == 0, err.decode(errors="replace")[-2000:]
        methods = [parse_message(c.message.raw) for c in router.calls]
        invites = [m for m in methods if isinstance(m, Request) and m.method == "INVITE"]
        assert len(invites) == 5  # one routing call per call: retransmissions absorbed
        assert edge.stats.registry.get_sample_value("sipmesh_transactions_total",
                                                    {"class_": "2xx"}) == 10.0  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):
            uas.terminate()
        await uas.wait()
        await edge.stop(0)
