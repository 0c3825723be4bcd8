"""Sends HEP3 packets to a capture server (Homer heplify-server, Kamailio sipcapture).

Capture must never slow down or break SIP: UDP packets are handed to the kernel
without waiting (one ``sendto``), TCP packets go into a bounded queue drained by a
writer task that reconnects with back-off; when the queue is full, packets are
dropped and counted (``sipmesh_hep_dropped``), as siptrace drops when its socket
blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque

from sipmesh.observe.hep import family_of

__all__ = ["HepSender"]

log = logging.getLogger("sipmesh.observe.hep")

_QUEUE_MAX = 10_000


class HepSender:
    """One destination (``transport`` udp or tcp). ``send`` never blocks or raises."""

    def __init__(self, transport: str, host: str, port: int) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.sent = 0
        self.dropped = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._queue: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._addr: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "udp":
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, _, _, _, sockaddr = infos[0]
            self._addr = (str(sockaddr[0]), int(sockaddr[1]))
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, family=family
            )
            # Typed as DatagramTransport, though not every loop's class subclasses it.
            self._udp = transport
        else:
            self._task = loop.create_task(self._tcp_writer(), name="hep-tcp-writer")

    async def stop(self) -> None:
        if self._task is not None:
            # Give queued packets a moment to leave, then stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while self._queue:  # noqa: ASYNC110 - once, at shutdown
                        await asyncio.sleep(0.02)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._udp is not None:
            self._udp.close()

    def send(self, packet: bytes) -> None:
        if self._udp is not None:
            try:
                self._udp.sendto(packet, self._addr)
                self.sent += 1
            except OSError:
                self.dropped += 1
            return
        if len(self._queue) >= _QUEUE_MAX:
            self.dropped += 1
            return
        self._queue.append(packet)
        self._wakeup.set()

    async def _tcp_writer(self) -> None:
        delay = 0.1
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, family=family_of(self.host) if ":" in self.host else 0
                    ),
                    5.0,
                )
            except (OSError, TimeoutError) as exc:
                log.debug("HEP %s:%s unreachable: %s", self.host, self.port, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            try:
                while True:
                    while not self._queue:
                        self._wakeup.clear()
                        await self._wakeup.wait()
                    batch = list(self._queue)
                    self._queue.clear()
                    writer.write(b"".join(batch))
                    await writer.drain()
                    self.sent += len(batch)
            except OSError as exc:
                log.debug("HEP connection lost: %s", exc)
            finally:
                writer.close()
