"""Server transactions (RFC 3261 §17.2, with RFC 6026 §7.1's Accepted state).

Tables keyed by (state, input) as in client.py. Inputs PROVISIONAL/SUCCESS/FAILURE
are responses handed down by the TU; REQUEST and ACK are what arrives from the peer
after the transaction was created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.stateless import make_response
from sipmesh.sip.transaction.common import (
    AckReceived,
    Address,
    Input,
    State,
    Transaction,
    Transition,
)

__all__ = ["InviteServerTransaction", "NonInviteServerTransaction", "ServerTransaction"]

_S, _I, _T = State, Input, Transition


@dataclass(eq=False)
class ServerTransaction(Transaction):
    """Holds the last response so retransmitted requests can be answered with it."""

    source: Address | None = None
    last_response: Response | None = field(default=None, init=False)
    _last_wire: bytes = field(default=b"", init=False)

    def start(self, now: float) -> None:
        return None

    @property
    def to_tag(self) -> str | None:
        """The To tag of the last response (RFC 2543 ACK matching, §17.2.3)."""
        return None if self.last_response is None else self.last_response.to.tag

    def send_response(self, now: float, message: Message | None) -> None:
        assert isinstance(message, Response)
        self.last_response = message
        self._last_wire = bytes(message)
        self.host.transmit(self, self._last_wire, self.peer)

    def resend_last(self, now: float, message: Message | None) -> None:
        if self._last_wire:
            self.host.transmit(self, self._last_wire, self.peer)


_INVITE_TABLE: Mapping[tuple[State, Input], Transition] = MappingProxyType(
    {
        # §17.2.1 Proceeding: the INVITE went to the TU; retransmissions get the last
        # provisional again; 100 Trying if the TU stays silent for 200 ms.
        (_S.PROCEEDING, _I.REQUEST): _T(_S.PROCEEDING, ("resend_last",)),
        (_S.PROCEEDING, _I.TIMER_TRYING): _T(_S.PROCEEDING, ("send_trying",)),
        (_S.PROCEEDING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("send_response",)),
        (_S.PROCEEDING, _I.SUCCESS): _T(_S.ACCEPTED, ("send_response", "start_l")),
        (_S.PROCEEDING, _I.FAILURE): _T(_S.COMPLETED, ("send_response", "start_g", "start_h")),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # §17.2.1 Completed: G retransmits the final (unreliable), H gives up on the ACK.
        (_S.COMPLETED, _I.REQUEST): _T(_S.COMPLETED, ("resend_last",)),
        (_S.COMPLETED, _I.TIMER_G): _T(_S.COMPLETED, ("retransmit_g",)),
        (_S.COMPLETED, _I.ACK): _T(_S.CONFIRMED, ("start_i",)),
        (_S.COMPLETED, _I.TIMER_H): _T(_S.TERMINATED, ("inform_timeout",)),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # §17.2.1 Confirmed: absorb ACK retransmissions until I (T4 / 0).
        (_S.CONFIRMED, _I.ACK): _T(_S.CONFIRMED),
        (_S.CONFIRMED, _I.REQUEST): _T(_S.CONFIRMED),
        (_S.CONFIRMED, _I.TIMER_I): _T(_S.TERMINATED),
        # RFC 6026 §7.1 Accepted: absorb INVITE retransmissions (the TU retransmits the
        # 2xx itself), let the TU send more 2xx, hand matching ACKs up, end on timer L.
        (_S.ACCEPTED, _I.REQUEST): _T(_S.ACCEPTED),
        (_S.ACCEPTED, _I.ACK): _T(_S.ACCEPTED, ("pass_ack",)),
        (_S.ACCEPTED, _I.SUCCESS): _T(_S.ACCEPTED, ("send_response",)),
        (_S.ACCEPTED, _I.TRANSPORT_ERROR): _T(_S.ACCEPTED, ("inform_transport_error",)),
        (_S.ACCEPTED, _I.TIMER_L): _T(_S.TERMINATED),
    }
)


@dataclass(eq=False)
class InviteServerTransaction(ServerTransaction):
    """RFC 3261 Figure 7 as amended by RFC 6026 Figure 7."""

    TABLE = _INVITE_TABLE
    STATE_TIMERS = MappingProxyType(
        {
            State.PROCEEDING: frozenset({Input.TIMER_TRYING}),
            State.COMPLETED: frozenset({Input.TIMER_G, Input.TIMER_H}),
            State.CONFIRMED: frozenset({Input.TIMER_I}),
            State.ACCEPTED: frozenset({Input.TIMER_L}),
        }
    )
    INITIAL = State.PROCEEDING

    def start(self, now: float) -> None:
        if self.config.trying_delay is not None:
            self.start_timer(Input.TIMER_TRYING, self.config.trying_delay, now)

    def send_trying(self, now: float, message: Message | None) -> None:
        if self.last_response is None:
            self.send_response(now, make_response(self.request, 100))

    def start_g(self, now: float, message: Message | None) -> None:
        if not self.reliable:
            self.intervals[Input.TIMER_G] = self.config.t1
            self.start_timer(Input.TIMER_G, self.config.t1, now)

    def retransmit_g(self, now: float, message: Message | None) -> None:
        # §17.2.1: G doubles up to T2, like timer E.
        self.resend_last(now, None)
        interval = min(self.intervals[Input.TIMER_G] * 2, self.config.t2)
        self.intervals[Input.TIMER_G] = interval
        self.start_timer(Input.TIMER_G, interval, now)

    def start_h(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_H, self.config.timer_h, now)

    def start_i(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_I, 0.0 if self.reliable else self.config.timer_i, now)

    def start_l(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_L, self.config.timer_l, now)

    def pass_ack(self, now: float, message: Message | None) -> None:
        assert isinstance(message, Request)
        assert self.source is not None
        self.host.emit(AckReceived(self.tx_id, message, self.source))


_NON_INVITE_TABLE: Mapping[tuple[State, Input], Transition] = MappingProxyType(
    {
        # §17.2.2 Trying: nothing sent yet, so retransmissions are absorbed.
        (_S.TRYING, _I.REQUEST): _T(_S.TRYING),
        (_S.TRYING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("send_response",)),
        (_S.TRYING, _I.SUCCESS): _T(_S.COMPLETED, ("send_response", "start_j")),
        (_S.TRYING, _I.FAILURE): _T(_S.COMPLETED, ("send_response", "start_j")),
        (_S.TRYING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # §17.2.2 Proceeding: retransmissions get the last provisional.
        (_S.PROCEEDING, _I.REQUEST): _T(_S.PROCEEDING, ("resend_last",)),
        (_S.PROCEEDING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("send_response",)),
        (_S.PROCEEDING, _I.SUCCESS): _T(_S.COMPLETED, ("send_response", "start_j")),
        (_S.PROCEEDING, _I.FAILURE): _T(_S.COMPLETED, ("send_response", "start_j")),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # §17.2.2 Completed: retransmissions get the final; J (64*T1 / 0) ends it.
        (_S.COMPLETED, _I.REQUEST): _T(_S.COMPLETED, ("resend_last",)),
        (_S.COMPLETED, _I.TIMER_J): _T(_S.TERMINATED),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
    }
)


@dataclass(eq=False)
class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 Figure 8."""

    TABLE = _NON_INVITE_TABLE
    STATE_TIMERS = MappingProxyType({State.COMPLETED: frozenset({Input.TIMER_J})})
    INITIAL = State.TRYING

    def start_j(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_J, 0.0 if self.reliable else self.config.timer_j, now)
        # Completed (§17.2.2) only resends the final response's bytes for timer J
        # (32 s on UDP); the parsed response is not needed again (its To tag matters
        # for INVITE ACK matching only) and is released, as a busy registrar holds
        # tens of thousands of these.
        self.last_response = None
