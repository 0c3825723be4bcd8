"""Port-pair allocation over the configured range.

Ports are handed out in pairs, RTP on an even port and RTCP on the next odd one
(RFC 3550 §11: "RTP SHOULD use an even destination port number and the
corresponding RTCP stream SHOULD use the next higher (odd) port"). Both sockets of
a pair are always bound, even when the SDP negotiates rtcp-mux (RFC 5761): an
offer does not yet know whether the answerer will accept mux, and a bound RTCP
port costs one descriptor. The allocator binds the sockets itself, so a port taken
by another process is skipped instead of handed out; it rotates through the range
so a just-freed pair is not reused at once (late packets of the old call would
latch the new one).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

__all__ = ["PortAllocator", "PortPair", "PortsExhausted"]


class PortsExhausted(Exception):
    """No free port pair is left in the range on that address."""


@dataclass(slots=True)
class PortPair:
    """A bound, non-blocking RTP socket on an even port and RTCP on port + 1."""

    host: str
    port: int
    rtp: socket.socket
    rtcp: socket.socket
    family: int = field(default=socket.AF_INET)

    @property
    def rtcp_port(self) -> int:
        return self.port + 1

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def _bind(host: str, port: int, family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class PortAllocator:
    """Allocates bound port pairs from ``[port_min, port_max]`` per local address.

    Each bind address (the IPv4 and the IPv6 one) has the whole range to itself:
    the same port number can serve a call on each family.
    """

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)  # first even port
        last = port_max - 1 if port_max % 2 == 0 else port_max  # RTCP must fit
        if last <= first:
            raise ValueError(f"port range {port_min}-{port_max} holds no RTP/RTCP pair")
        self._bases = range(first, last, 2)
        self._used: dict[str, set[int]] = {}
        self._cursor: dict[str, int] = {}

    @property
    def capacity(self) -> int:
        """Pairs in the range (per bind address)."""
        return len(self._bases)

    def free(self, host: str) -> int:
        """Pairs not handed out on ``host`` (some may still be taken by other processes)."""
        return len(self._bases) - len(self._used.get(host, ()))

    def allocate(self, host: str) -> PortPair:
        """Bind the next free pair on ``host``; raises PortsExhausted when none is left."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        used = self._used.setdefault(host, set())
        n = len(self._bases)
        start = self._cursor.get(host, 0)
        for step in range(n):
            index = (start + step) % n
            base = self._bases[index]
            if base in used:
                continue
            try:
                rtp = _bind(host, base, family)
            except OSError:
                continue
            try:
                rtcp = _bind(host, base + 1, family)
            except OSError:
                rtp.close()
                continue
            used.add(base)
            self._cursor[host] = (index + 1) % n
            return PortPair(host, base, rtp, rtcp, family)
        raise PortsExhausted(
            f"no free RTP/RTCP port pair in {self._bases.start}-{self._bases.stop} on {host}"
            f" ({len(used)} of {n} in use by this relay)"
        )

    def release(self, pair: PortPair) -> None:
        pair.close()
        self._used.get(pair.host, set()).discard(pair.port)
