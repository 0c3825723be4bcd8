"""SCTP listener (RFC 4168): one one-to-many (SOCK_SEQPACKET) socket per listener.

SCTP keeps message boundaries, so each received message is one SIP message, as
with UDP, but delivery is reliable. Where Python or the kernel lacks SCTP the
listener fails at start-up with a TransportError that says so (the usual cause is
the ``sctp`` kernel module not being loaded, or a container without it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from sipmesh.edge.transport.base import Flow, ListenerSpec, MessageSink, TransportError
from sipmesh.edge.transport.flows import normalize_ip
from sipmesh.edge.transport.stats import TransportStats

__all__ = ["SctpListener", "open_sctp_socket"]

log = logging.getLogger(__name__)


def open_sctp_socket(spec: ListenerSpec, *, reuse_port: bool = False) -> socket.socket:
    """A bound, listening one-to-many SCTP socket, or TransportError saying why not."""
    proto = getattr(socket, "IPPROTO_SCTP", None)
    if proto is None:
        raise TransportError(
            f"{spec.name}: SCTP not supported by this kernel (Python has no IPPROTO_SCTP)"
        )
    try:
        sock = socket.socket(spec.family, socket.SOCK_SEQPACKET, proto)
    except OSError as exc:
        raise TransportError(
            f"{spec.name}: SCTP not supported by this kernel ({exc.strerror or exc}; "
            "is the sctp kernel module loaded?)"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise TransportError(f"{spec.name}: cannot bind: {exc.strerror or exc}") from None
    return sock


class SctpListener:
    """Reads messages with ``add_reader`` (no task), sends with ``sendto``."""

    def __init__(
        self,
        spec: ListenerSpec,
        sock: socket.socket,
        sink: MessageSink,
        stats: TransportStats,
        clock: Callable[[], float],
        max_message_size: int,
    ) -> None:
        self.spec = spec
        self._sock = sock
        self._sink = sink
        self._clock = clock
        self._max = max_message_size
        self._stats = stats
        name = sock.getsockname()
        self.local = (normalize_ip(str(name[0])), int(name[1]))
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(64):  # bounded so one busy socket cannot starve the loop
            try:
                data, addr = self._sock.recvfrom(self._max + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("sctp %s: %s", self.spec.name, exc)
                return
            if len(data) > self._max:
                self._stats.drop_oversize.labels("sctp").inc()
                continue
            if not data.strip(b"\r\n"):
                continue
            ip, port = normalize_ip(str(addr[0])), int(addr[1])
            flow = Flow(
                "sctp", (ip, port), self.local, self.spec.name, f"sctp|{self.spec.name}|{ip}|{port}"
            )
            self._sink.on_message(data, flow, self._clock())

    def make_flow(self, ip: str, port: int) -> Flow:
        name = self.spec.name
        return Flow("sctp", (ip, port), self.local, name, f"sctp|{name}|{ip}|{port}")

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, remote)
        except OSError as exc:
            self._stats.drop_send.labels("sctp").inc()
            raise TransportError(f"{self.spec.name}: send to {remote}: {exc}") from exc

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
