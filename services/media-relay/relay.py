"""The forwarding path: one reader per relay socket, latching, counters.

Every party of a call has one :class:`Stream` per ``m=`` line: the relay ports it
sends to (a bound RTP/RTCP pair) and the address it receives on (its *peer*). A
packet arriving on a stream's ports is sent on from the ports of the stream it is
linked to (``forward``), so each party sees its media come from the same relay
port it sends to: symmetric RTP (RFC 4961), what endpoints behind NAT need.

Why not one ``asyncio.DatagramProtocol`` per port: the transport allocates a
``bytes`` object for every datagram and calls back once per datagram. Here the
event loop (uvloop when installed) tells us a socket is readable, and the reader
drains it with ``recvfrom_into`` into one preallocated buffer and forwards a
``memoryview`` slice of it, so a packet costs two system calls and no copy of its
payload in Python. Nothing is logged per packet; counters are plain integers on
the stream, summed only when someone asks (metrics scrape, query).

Latching (``strictness``):

- ``open``: the destination always follows the latest source (rtpengine's
  media-handover);
- ``latch`` (default): the first source is learned; another source takes over only
  when it is legitimate: same IP as the latched one (a NAT rebinding its port) or
  the latched source has been silent for ``relatch_after`` seconds (the endpoint
  moved); other packets are dropped and counted as errors;
- ``strict``: once latched, only that exact address is accepted until signalling
  (a new offer/answer) resets the latch (rtpengine's strict-source).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Literal

from sipmesh.media_relay.ports import PortPair

__all__ = ["Addr", "Relay", "Stream", "Strictness", "peer_addr"]

Addr = tuple[str, int] | tuple[str, int, int, int]
Strictness = Literal["open", "latch", "strict"]

_STRICTNESS: dict[str, int] = {"open": 0, "latch": 1, "strict": 2}
_DRAIN = 64  # datagrams per readiness callback, so one busy socket cannot starve others
_HOLD = ("0.0.0.0", "::")


def peer_addr(host: str, port: int) -> Addr | None:
    """The address tuple recvfrom() would report for (host, port); None when on hold."""
    if port == 0 or host in _HOLD:
        return None
    if ":" in host:
        return (host, port, 0, 0)
    return (host, port)


class Stream:
    """One party's side of one media stream."""

    __slots__ = (
        "bytes",
        "errors",
        "forward",
        "index",
        "last_packet",
        "media",
        "mux",
        "packets",
        "pair",
        "rtcp_latched",
        "rtcp_peer",
        "rtp_latched",
        "rtp_peer",
        "symmetric",
        "tag",
    )

    def __init__(self, index: int, media: str, pair: PortPair, tag: str = "") -> None:
        self.index = index
        self.media = media
        self.pair = pair
        self.tag = tag
        # Where this party receives (SDP, then latched).
        self.rtp_peer: Addr | None = None
        self.rtcp_peer: Addr | None = None
        self.rtp_latched = False
        self.rtcp_latched = False
        self.mux = False
        self.symmetric = True
        self.forward: Stream | None = None
        # Received from this party (on this stream's ports).
        self.packets = 0
        self.bytes = 0
        self.errors = 0
        self.last_packet = 0.0  # time.monotonic() of the last accepted packet; 0 = none

    def set_peer(self, rtp: Addr | None, rtcp: Addr | None, *, mux: bool, symmetric: bool) -> None:
        """New addresses from signalling: forget what was latched (RFC 4961 §3)."""
        self.rtp_peer = rtp
        self.rtcp_peer = rtp if mux else rtcp
        self.mux = mux
        self.symmetric = symmetric
        self.rtp_latched = False
        self.rtcp_latched = False


class Relay:
    """Attaches streams' sockets to the event loop and keeps closed-session totals."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        strictness: Strictness = "latch",
        relatch_after: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loop = loop
        self._strict = _STRICTNESS[strictness]
        self._relatch_after = relatch_after
        self._monotonic = monotonic
        self._buf = bytearray(65536)
        self._view = memoryview(self._buf)
        self._attached: set[int] = set()
        # Totals of streams already detached (the live ones are summed on demand).
        self.closed_packets = 0
        self.closed_bytes = 0
        self.closed_errors = 0

    def attach(self, stream: Stream) -> None:
        for sock, rtcp_port in ((stream.pair.rtp, False), (stream.pair.rtcp, True)):
            fd = sock.fileno()
            self._loop.add_reader(fd, self._reader(stream, sock, rtcp_port))
            self._attached.add(fd)

    def detach(self, stream: Stream) -> None:
        for sock in (stream.pair.rtp, stream.pair.rtcp):
            fd = sock.fileno()
            if fd >= 0 and fd in self._attached:
                self._loop.remove_reader(fd)
                self._attached.discard(fd)
        self.closed_packets += stream.packets
        self.closed_bytes += stream.bytes
        self.closed_errors += stream.errors

    def _reader(self, s: Stream, sock: socket.socket, rtcp_port: bool) -> Callable[[], None]:
        """The per-socket callback; everything it needs is bound in the closure."""
        buf = self._buf
        view = self._view
        strict = self._strict
        relatch_after = self._relatch_after
        monotonic = self._monotonic
        recv = sock.recvfrom_into

        def on_readable() -> None:
            for _ in range(_DRAIN):
                try:
                    n, addr = recv(buf)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    s.errors += 1
                    return
                now = monotonic()
                # RFC 5761 §4: on a muxed port, RTCP has packet types 192..223 in byte 1.
                is_rtcp = rtcp_port or (s.mux and n > 1 and 192 <= buf[1] <= 223)
                if is_rtcp and not s.mux:
                    if addr != s.rtcp_peer:
                        if not _accept(s, addr, s.rtcp_latched, strict, relatch_after, now):
                            s.errors += 1
                            continue
                        if s.symmetric:
                            s.rtcp_peer = addr
                            s.rtcp_latched = True
                    elif not s.rtcp_latched:
                        s.rtcp_latched = True  # came from where the SDP said
                elif addr != s.rtp_peer:
                    if not _accept(s, addr, s.rtp_latched, strict, relatch_after, now):
                        s.errors += 1
                        continue
                    if s.symmetric:
                        s.rtp_peer = addr
                        s.rtp_latched = True
                        if s.mux:
                            s.rtcp_peer = addr
                elif not s.rtp_latched:
                    s.rtp_latched = True
                s.packets += 1
                s.bytes += n
                s.last_packet = now
                d = s.forward
                if d is None:
                    s.errors += 1
                    continue
                if is_rtcp and not d.mux:
                    dst = d.rtcp_peer
                    out = d.pair.rtcp
                else:
                    dst = d.rtp_peer
                    out = d.pair.rtp
                if dst is None:
                    s.errors += 1
                    continue
                try:
                    out.sendto(view[:n], dst)
                except OSError:
                    # Full send buffer or unreachable peer: media tolerates loss.
                    s.errors += 1

        return on_readable


def _accept(
    s: Stream, addr: Addr, latched: bool, strict: int, relatch_after: float, now: float
) -> bool:
    """Whether a packet from ``addr`` (not the current peer) may be relayed."""
    if not s.symmetric:
        return True  # asymmetric: send where the SDP says, accept any source
    if not latched or strict == 0:
        return True
    if strict == 2:
        return False
    current = s.rtp_peer
    if current is not None and current[0] == addr[0]:
        return True  # same host, new port: a NAT rebinding
    return now - s.last_packet >= relatch_after
