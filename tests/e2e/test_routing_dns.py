"""SIPOUT through a running `sipmesh serve`: a foreign domain resolved with RFC 3263
through a local test DNS server, the first SRV target failing (issue 6).

The zone: `_sip._udp.far.test` has two SRV records, priority 10 on one port and
priority 20 on another, both hosts with A 127.0.0.1. The first target either answers
503 or does not answer at all (a UDP socket that reads nothing, with a short
fr_timer); RFC 3263 §4.3 makes the proxy go on to the next, where a sipp UAS answers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import SipmeshProcess
from tests.e2e.test_routing_features import Peer, call, peer, start_sipmesh
from tests.e2e.test_routing_features import peers as peers  # the fixture
from tests.router.dnsserver import DnsTestServer

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]


class ThreadedDns:
    """DnsTestServer on its own event loop in a thread (the tests block on sipp)."""

    def __init__(self) -> None:
        self.server = DnsTestServer()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _stop(self) -> None:
        self.server.stop()
        await asyncio.sleep(0)  # the transport closes on the next loop iteration

    def __enter__(self) -> DnsTestServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(5)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def dns() -> Iterator[DnsTestServer]:
    with ThreadedDns() as server:
        yield server


@pytest.mark.parametrize("first", ["503", "silent"])
def test_foreign_domain_fails_over_to_the_second_srv_target(
    workdir: Path, peers: list[Peer], dns: DnsTestServer, first: str
) -> None:
    silent: socket.socket | None = None
    core: SipmeshProcess | None = None
    try:
        if first == "503":
            failing = peer(peers, workdir, "uas_503.xml", "first")
            first_port = failing.port
        else:
            # Bound (no ICMP port unreachable) but never answering: the branch times out.
            silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            silent.bind(("127.0.0.1", 0))
            first_port = silent.getsockname()[1]
        second = peer(peers, workdir, "uas_answer.xml", "second")
        dns.add(
            "_sip._udp.far.test",
            "SRV",
            f"10 0 {first_port} a.far.test.",
            f"20 0 {second.port} b.far.test.",
        )
        dns.add("a.far.test", "A", "127.0.0.1")
        dns.add("b.far.test", "A", "127.0.0.1")
        core = start_sipmesh(
            workdir,
            {
                "router": {
                    "dns_servers": [f"{dns.host}:{dns.port}"],
                    "dns_transports": ["udp"],
                },
                # A non-answering hop is given up after 1 s (tm's fr_timer).
                "edge": {"fr_timer": 1.0},
            },
        )
        result = call(core, workdir, "bob@far.test", "call_auth_uri.xml")
        assert result.returncode == 0, result.output + core.log()
        assert result.successful == 1
        assert dns.count("_sip._udp.far.test", "SRV") >= 1
        assert second.invites() == ["INVITE sip:bob@far.test SIP/2.0"]
        if first == "503":
            assert failing.invites() == ["INVITE sip:bob@far.test SIP/2.0"]
        else:
            assert silent is not None
            silent.settimeout(0)
            assert b"INVITE sip:bob@far.test SIP/2.0" in silent.recv(65536)
    finally:
        if silent is not None:
            silent.close()
        if core is not None:
            assert core.stop() == 0, core.log()
