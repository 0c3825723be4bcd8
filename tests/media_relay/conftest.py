"""Fixtures for the media relay: a started relay on 127.0.0.1/::1 and UDP endpoints."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sipmesh.media_relay.service import MediaRelayService
from sipmesh.runtime.sections.media_relay import MediaRelayConfig
from sipmesh.sip.sdp import parse_sdp


def random_range(size: int = 200) -> tuple[int, int]:
    base = random.randrange(20000, 60000 - size, 2)
    return base, base + size - 1


def relay_config(**overrides: Any) -> MediaRelayConfig:
    low, high = random_range()
    values: dict[str, Any] = {
        "port_min": low,
        "port_max": high,
        "bind_ipv4": "127.0.0.1",
        "bind_ipv6": "::1",
        "ng_listen": "127.0.0.1:0",
        "media_timeout": 0.0,
    }
    values.update(overrides)
    return MediaRelayConfig(**values)


@pytest.fixture
async def relay() -> AsyncIterator[MediaRelayService]:
    service = MediaRelayService(relay_config())
    await service.start()
    yield service
    await service.stop(0)


def sdp(
    ip: str,
    port: int,
    *,
    rtcp_mux: bool = False,
    ice: bool = False,
    direction: str | None = "sendrecv",
    video_port: int | None = None,
) -> bytes:
    fam = "IP6" if ":" in ip else "IP4"
    lines = [
        "v=0",
        f"o=alice 2890844526 2890844526 IN {fam} {ip}",
        "s=-",
        f"c=IN {fam} {ip}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
    ]
    if direction:
        lines.append(f"a={direction}")
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    if ice:
        lines += [
            "a=ice-ufrag:F7gI",
            "a=ice-pwd:x9cml/YzichV2+XlhiMu8g",
            f"a=candidate:1 1 UDP 2130706431 {ip} {port} typ host",
        ]
    if video_port is not None:
        lines += [f"m=video {video_port} RTP/AVP 96", "a=rtpmap:96 H264/90000"]
    return ("\r\n".join(lines) + "\r\n").encode()


def media_target(body: bytes, index: int = 0) -> tuple[str, int, int]:
    """(address, RTP port, RTCP port) an SDP tells its receiver to send to."""
    sd = parse_sdp(body)
    m = sd.media[index]
    conn = sd.media_connection(m)
    assert conn is not None
    rtcp = m.rtcp
    return conn.address, m.port, rtcp.port if rtcp is not None else m.port + 1


def rtp(seq: int, pt: int = 0, size: int = 160) -> bytes:
    header = bytes([0x80, pt & 0x7F, (seq >> 8) & 0xFF, seq & 0xFF]) + b"\0\0\0\0" + b"\0\0\0\x01"
    return header + bytes(size)


def rtcp_sr() -> bytes:
    # RFC 3550 §6.4.1 sender report header: V=2, PT=200, length 6 words.
    return bytes([0x80, 200, 0, 6]) + bytes(24)


@dataclass
class Endpoint:
    """A UDP socket standing in for a phone."""

    sock: socket.socket

    @classmethod
    def open(cls, host: str = "127.0.0.1", port: int = 0) -> Endpoint:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((host, port))
        return cls(sock)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 4096), timeout)
        return data, addr

    async def nothing(self, wait: float = 0.3) -> bool:
        """True when nothing arrives within ``wait`` seconds."""
        try:
            await self.recv(wait)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def endpoints() -> Iterator[Callable[..., Endpoint]]:
    opened: list[Endpoint] = []

    def make(host: str = "127.0.0.1", port: int = 0) -> Endpoint:
        ep = Endpoint.open(host, port)
        opened.append(ep)
        return ep

    yield make
    for ep in opened:
        ep.close()
