"""Shared pieces of the transport tests: a recording sink, managers, certificates."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.edge.transport import Flow, TransportManager
from sipmesh.runtime.sections.edge import EdgeConfig


def options(n: int = 1, body: bytes = b"", call_id: str = "abc") -> bytes:
    head = (
        f"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5099;branch=z9hG4bK-{call_id}-{n}\r\n"
        f"From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class RecordingSink:
    """Records what the transports deliver; optionally answers through a callback."""

    messages: list[tuple[bytes, Flow, float]] = field(default_factory=list)
    closed: list[Flow] = field(default_factory=list)
    on_msg: Callable[[bytes, Flow], None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, data: bytes, flow: Flow, received_at: float) -> None:
        self.messages.append((data, flow, received_at))
        self._arrived.set()
        if self.on_msg is not None:
            self.on_msg(data, flow)

    def on_flow_closed(self, flow: Flow) -> None:
        self.closed.append(flow)
        self._arrived.set()

    async def wait_for(self, check: Callable[[], bool], limit: float = 5.0) -> None:
        """Wait (bounded) until ``check()`` holds after some delivery."""
        async with asyncio.timeout(limit):
            while not check():
                self._arrived.clear()
                await self._arrived.wait()


@dataclass
class Made:
    manager: TransportManager
    sink: RecordingSink
    registry: CollectorRegistry

    def port(self, transport: str) -> int:
        return next(i.port for i in self.manager.listeners() if i.transport == transport)

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return value or 0.0


class Kit:
    """What the tests of this folder share (conftest modules cannot be imported)."""

    options = staticmethod(options)
    Sink = RecordingSink


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
async def make_manager() -> AsyncIterator[Callable[..., Any]]:
    """``await make_manager(["udp:127.0.0.1:0"], **edge_settings)`` → started Made."""
    started: list[TransportManager] = []

    async def make(
        listeners: list[str], sink: RecordingSink | None = None, **settings: Any
    ) -> Made:
        sink = sink or RecordingSink()
        registry = CollectorRegistry()
        manager = TransportManager(listeners, sink, EdgeConfig(**settings), metrics=registry)
        await manager.start()
        started.append(manager)
        return Made(manager, sink, registry)

    yield make
    for manager in started:
        await manager.stop(0)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    alt_cert: Path  # a second server certificate, CN sip.example.test (SNI)
    alt_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _issue(dir_: Path, name: str, subject: str, san: str, ca: Path, ca_key: Path) -> None:
    key, csr, ext = dir_ / f"{name}.key", dir_ / f"{name}.csr", dir_ / f"{name}.ext"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", subject,
             "-out", str(csr))  # fmt: skip
    ext.write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-out", str(dir_ / f"{name}.pem"),
             "-extfile", str(ext))  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA with a server (IP 127.0.0.1, ::1), an SNI and a client certificate."""
    d = tmp_path_factory.mktemp("certs")
    ca, ca_key = d / "ca.pem", d / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=sipmesh test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _issue(d, "server", "/CN=127.0.0.1", "IP:127.0.0.1,IP:::1,DNS:localhost", ca, ca_key)
    _issue(d, "alt", "/CN=sip.example.test", "DNS:sip.example.test", ca, ca_key)
    _issue(d, "client", "/CN=alice-phone/O=sipmesh tests", "DNS:alice.example.test", ca, ca_key)
    return Certs(
        ca, d / "server.pem", d / "server.key", d / "alt.pem", d / "alt.key",
        d / "client.pem", d / "client.key",
    )  # fmt: skip
