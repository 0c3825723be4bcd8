"""The session table and the offer/answer/delete logic (rtpengine's call model).

A session is one call (Call-ID). Each party is a :class:`Leg` named by its tag:
the caller's From tag, and one leg per callee fork. Forks are told apart by their
To tag once they answer, and before that by the Via branch of the INVITE that
went to them (rtpengine's ``via-branch``: a proxy that calls offer once per branch
gets separate relay ports per fork, so forked early media from each callee is
relayed apart). The caller's media goes to the fork that answered last (the 183 or
200 it is listening to); media of every fork reaches the caller.

Offer (RFC 3264 §5) from leg X: X's streams learn where X receives; the SDP sent on
is rewritten to the ports of the answering leg (where the answerer will send).
Answer (§6): the answerer's streams learn their peers; the SDP sent back is
rewritten to X's ports. A re-INVITE is an offer from a leg that already exists,
in either direction; it keeps the ports and resets the latches.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sipmesh.media_relay.ports import PortAllocator, PortsExhausted
from sipmesh.media_relay.relay import Relay, Stream, peer_addr
from sipmesh.media_relay.sdp_rewrite import (
    Flags,
    LocalPorts,
    MediaEndpoint,
    SdpError,
    endpoints,
    parse_offer,
    rewrite,
)

__all__ = [
    "AddressPlan",
    "Leg",
    "RelayError",
    "Session",
    "SessionLimit",
    "SessionNotFound",
    "SessionTable",
]


class RelayError(Exception):
    """A control request the relay cannot carry out; the message says why."""


class SessionNotFound(RelayError):
    pass


class SessionLimit(RelayError):
    pass


@dataclass(frozen=True, slots=True)
class AddressPlan:
    """Where the relay binds and what it writes into SDP, per address family.

    An empty bind address turns that family off; an empty advertised address means
    the bind address (which must then not be a wildcard).
    """

    bind_v4: str = "127.0.0.1"
    bind_v6: str = ""
    advertise_v4: str = ""
    advertise_v6: str = ""

    def bind(self, family: str) -> str:
        host = self.bind_v6 if family == "IP6" else self.bind_v4
        if not host:
            raise RelayError(f"this relay has no {family} address (bind_{family[-1]} unset)")
        return host

    def advertise(self, family: str) -> str:
        adv = self.advertise_v6 if family == "IP6" else self.advertise_v4
        if adv:
            return adv
        host = self.bind(family)
        if ipaddress.ip_address(host).is_unspecified:
            raise RelayError(f"advertise address for {family} needed with wildcard bind {host}")
        return host


@dataclass(eq=False)
class Leg:
    tag: str
    branch: str = ""
    streams: list[Stream] = field(default_factory=list)
    answered: bool = False
    family: str = "IP4"


@dataclass(eq=False)
class Session:
    call_id: str
    from_tag: str
    caller: Leg
    created_at: float
    last_signal_at: float
    last_signal_mono: float
    callees: list[Leg] = field(default_factory=list)
    active: Leg | None = None

    @property
    def to_tag(self) -> str:
        return self.active.tag if self.active is not None else ""

    def legs(self) -> Iterator[Leg]:
        yield self.caller
        yield from self.callees

    def streams(self) -> Iterator[Stream]:
        for leg in self.legs():
            yield from leg.streams

    def leg_by_tag(self, tag: str) -> Leg | None:
        for leg in self.legs():
            if tag and leg.tag == tag:
                return leg
        return None

    def last_activity(self) -> float:
        """Monotonic time of the last packet or signalling, whichever is later."""
        last = self.last_signal_mono
        for s in self.streams():
            if s.last_packet > last:
                last = s.last_packet
        return last


@dataclass(frozen=True, slots=True)
class Rewritten:
    sdp: bytes
    warnings: list[str]
    session: Session


class SessionTable:
    def __init__(
        self,
        allocator: PortAllocator,
        relay: Relay,
        addresses: AddressPlan,
        *,
        max_sessions: int = 0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ports = allocator
        self._relay = relay
        self._addresses = addresses
        self._max = max_sessions
        self._clock = clock
        self._monotonic = monotonic
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, call_id: str) -> Session:
        session = self._sessions.get(call_id)
        if session is None:
            raise SessionNotFound(f"unknown call-id {call_id!r}")
        return session

    def free_ports(self) -> int:
        return self._ports.free(self._addresses.bind_v4 or self._addresses.bind_v6)

    # -- offer / answer ---------------------------------------------------------------
    def offer(
        self,
        call_id: str,
        from_tag: str,
        sdp: bytes,
        flags: Flags,
        *,
        source_ip: str | None = None,
        via_branch: str = "",
    ) -> Rewritten:
        if not call_id or not from_tag:
            raise RelayError("offer needs a call-id and a from-tag")
        sd = parse_offer(sdp)
        eps = endpoints(sd, source_ip, flags)
        session = self._sessions.get(call_id)
        created = session is None
        if session is None:
            if self._max and len(self._sessions) >= self._max:
                raise SessionLimit(f"session limit reached ({self._max} sessions)")
            now = self._clock()
            session = Session(call_id, from_tag, Leg(from_tag), now, now, self._monotonic())
        offerer = session.leg_by_tag(from_tag)
        if offerer is None:
            raise RelayError(
                f"call {call_id!r} exists with from-tag {session.from_tag!r}, not {from_tag!r}"
            )
        if offerer is session.caller:
            answerer = self._callee_for_offer(session, via_branch)
        else:
            answerer = session.caller  # re-INVITE from a callee
        try:
            self._fit(offerer, eps, _family(eps, None))
            self._fit(answerer, eps, _family(eps, flags.address_family))
        except BaseException:
            if created:
                self._release(session)
            raise
        for stream, ep in zip(offerer.streams, eps, strict=True):
            _set_peer(stream, ep, flags)
        if answerer is not session.caller and answerer not in session.callees:
            session.callees.append(answerer)
        if offerer is session.caller:
            session.active = answerer
        _link(offerer, answerer)
        self._touch(session)
        self._sessions[call_id] = session
        body = rewrite(sd, self._local(answerer, eps, flags.media_address), flags)
        return Rewritten(body, flags.warnings, session)

    def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: bytes,
        flags: Flags,
        *,
        source_ip: str | None = None,
        via_branch: str = "",
    ) -> Rewritten:
        session = self.get(call_id)
        sd = parse_offer(sdp)
        eps = endpoints(sd, source_ip, flags)
        offerer = session.leg_by_tag(from_tag)
        if offerer is None:
            raise RelayError(f"call {call_id!r} has no party with from-tag {from_tag!r}")
        if offerer is session.caller:
            answerer = self._callee_for_answer(session, to_tag, via_branch)
        else:
            answerer = session.caller
        if answerer is None:
            raise RelayError(f"call {call_id!r} has no offer waiting for to-tag {to_tag!r}")
        if len(eps) != len(answerer.streams):
            raise SdpError(
                f"answer has {len(eps)} m= lines, the offer had {len(answerer.streams)}"
                " (RFC 3264 §6)"
            )
        if to_tag and answerer is not session.caller:
            answerer.tag = to_tag
            for s in answerer.streams:
                s.tag = to_tag
        answerer.answered = True
        for stream, ep in zip(answerer.streams, eps, strict=True):
            _set_peer(stream, ep, flags)
        # The offerer muxes only if the answer accepted it (RFC 5761 §5.1.1).
        for stream, ep in zip(offerer.streams, eps, strict=False):
            if stream.mux and not ep.rtcp_mux:
                stream.mux = False
        if offerer is session.caller:
            session.active = answerer
        _link(offerer, answerer)
        self._touch(session)
        body = rewrite(sd, self._local(offerer, eps, flags.media_address), flags)
        return Rewritten(body, flags.warnings, session)

    # -- delete -----------------------------------------------------------------------
    def delete(self, call_id: str, via_branch: str = "") -> Session:
        """Remove the call, or only one fork (of several) when ``via_branch`` names it."""
        session = self.get(call_id)
        if via_branch:
            for leg in session.callees:
                if leg.branch == via_branch and len(session.callees) > 1:
                    self._drop_leg(session, leg)
                    return session
        del self._sessions[call_id]
        self._release(session)
        return session

    def close(self) -> None:
        for session in list(self._sessions.values()):
            self._release(session)
        self._sessions.clear()

    # -- helpers ----------------------------------------------------------------------
    def _callee_for_offer(self, session: Session, via_branch: str) -> Leg:
        for leg in session.callees:
            if via_branch and leg.branch == via_branch:
                return leg
        if not via_branch and session.active is not None:
            return session.active  # re-offer from the caller: same callee
        if not via_branch and session.callees:
            return session.callees[-1]
        return Leg("", branch=via_branch)

    def _callee_for_answer(self, session: Session, to_tag: str, via_branch: str) -> Leg | None:
        for leg in session.callees:
            if to_tag and leg.tag == to_tag:
                return leg
        for leg in session.callees:
            if via_branch and leg.branch == via_branch:
                return leg
        for leg in reversed(session.callees):
            if not leg.answered:
                return leg
        # Another fork answering the same offer (no via-branch): it sends to the same
        # ports, so it takes over that leg.
        return session.active

    def _fit(self, leg: Leg, eps: list[MediaEndpoint], family: str) -> None:
        """Give ``leg`` one stream per m= line on ``family``, keeping existing ports."""
        if leg.streams and leg.family != family:
            self._drop_streams(leg)
        host = self._addresses.bind(family)
        while len(leg.streams) < len(eps):
            index = len(leg.streams)
            try:
                pair = self._ports.allocate(host)
            except PortsExhausted:
                raise
            stream = Stream(index, eps[index].media, pair, leg.tag)
            self._relay.attach(stream)
            leg.streams.append(stream)
        leg.family = family

    def _local(
        self, leg: Leg, eps: list[MediaEndpoint], override: str | None
    ) -> list[LocalPorts | None]:
        address = override or self._addresses.advertise(leg.family)
        out: list[LocalPorts | None] = []
        for stream, ep in zip(leg.streams, eps, strict=False):
            if ep.port == 0:
                out.append(None)
            else:
                out.append(LocalPorts(address, stream.pair.port, stream.pair.rtcp_port))
        return out

    def _touch(self, session: Session) -> None:
        session.last_signal_at = self._clock()
        session.last_signal_mono = self._monotonic()

    def _drop_streams(self, leg: Leg) -> None:
        for stream in leg.streams:
            self._relay.detach(stream)
            self._ports.release(stream.pair)
            stream.forward = None
        leg.streams.clear()

    def _drop_leg(self, session: Session, leg: Leg) -> None:
        self._drop_streams(leg)
        session.callees.remove(leg)
        if session.active is leg:
            session.active = session.callees[-1] if session.callees else None
            if session.active is not None:
                _link(session.caller, session.active)
        for s in session.caller.streams:
            if s.forward is not None and s.forward.pair.rtp.fileno() < 0:
                s.forward = None

    def _release(self, session: Session) -> None:
        for leg in session.legs():
            self._drop_streams(leg)


def _family(eps: list[MediaEndpoint], wanted: str | None) -> str:
    if wanted:
        return wanted
    for ep in eps:
        if ep.port and ep.address not in ("0.0.0.0", "::"):
            return ep.family
    return "IP4"


def _set_peer(stream: Stream, ep: MediaEndpoint, flags: Flags) -> None:
    stream.set_peer(
        peer_addr(ep.address, ep.port),
        peer_addr(ep.rtcp_address, ep.rtcp_port),
        mux=ep.rtcp_mux,
        symmetric=flags.symmetric,
    )


def _link(a: Leg, b: Leg) -> None:
    """Media received from party ``a`` goes out to party ``b`` and back."""
    for sa, sb in zip(a.streams, b.streams, strict=False):
        sa.forward = sb
        sb.forward = sa
