"""Client transactions (RFC 3261 §17.1, with RFC 6026 §7.2's Accepted state).

Each machine is a table keyed by (state, input). Actions are method names run in
order before entering the next state. Timers not listed for the new state in
``STATE_TIMERS`` are cancelled on a state change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.stateless import make_ack
from sipmesh.sip.transaction.common import (
    Input,
    ResponseReceived,
    State,
    Transaction,
    Transition,
)

__all__ = ["ClientTransaction", "InviteClientTransaction", "NonInviteClientTransaction"]

_S, _I, _T = State, Input, Transition


@dataclass(eq=False)
class ClientTransaction(Transaction):
    """Sends ``request`` to ``peer`` and passes responses up."""

    _wire: bytes = field(default=b"", init=False)

    def start(self, now: float) -> None:
        raise NotImplementedError

    def _send_request(self) -> None:
        if not self._wire:
            self._wire = bytes(self.request)
        self.host.transmit(self, self._wire, self.peer)

    def pass_up(self, now: float, message: Message | None) -> None:
        assert isinstance(message, Response)
        self.host.emit(ResponseReceived(self.tx_id, message))


_INVITE_TABLE: Mapping[tuple[State, Input], Transition] = MappingProxyType(
    {
        # §17.1.1.2 Calling: the INVITE is out; timer A retransmits (unreliable only),
        # timer B bounds the wait for any response.
        (_S.CALLING, _I.TIMER_A): _T(_S.CALLING, ("retransmit_a",)),
        (_S.CALLING, _I.TIMER_B): _T(_S.TERMINATED, ("inform_timeout",)),
        (_S.CALLING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("pass_up",)),
        (_S.CALLING, _I.SUCCESS): _T(_S.ACCEPTED, ("pass_up", "start_m")),
        (_S.CALLING, _I.FAILURE): _T(_S.COMPLETED, ("pass_up", "send_ack", "start_d")),
        (_S.CALLING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # §17.1.1.2 Proceeding: no more retransmissions; every 1xx goes up.
        (_S.PROCEEDING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("pass_up",)),
        (_S.PROCEEDING, _I.SUCCESS): _T(_S.ACCEPTED, ("pass_up", "start_m")),
        (_S.PROCEEDING, _I.FAILURE): _T(_S.COMPLETED, ("pass_up", "send_ack", "start_d")),
        # §17.1.1.2 Completed: retransmitted finals are answered with the same ACK and
        # not passed up; timer D (32 s unreliable, 0 reliable) ends the wait.
        (_S.COMPLETED, _I.FAILURE): _T(_S.COMPLETED, ("resend_ack",)),
        (_S.COMPLETED, _I.TIMER_D): _T(_S.TERMINATED),
        (_S.COMPLETED, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        # RFC 6026 §7.2 Accepted: 2xx retransmissions (and 2xx of other forks) go up so
        # the TU can ACK or forward them; timer M ends the state.
        (_S.ACCEPTED, _I.SUCCESS): _T(_S.ACCEPTED, ("pass_up",)),
        (_S.ACCEPTED, _I.TIMER_M): _T(_S.TERMINATED),
    }
)


@dataclass(eq=False)
class InviteClientTransaction(ClientTransaction):
    """RFC 3261 Figure 5 as amended by RFC 6026 Figure 5."""

    TABLE = _INVITE_TABLE
    STATE_TIMERS = MappingProxyType(
        {
            State.CALLING: frozenset({Input.TIMER_A, Input.TIMER_B}),
            State.COMPLETED: frozenset({Input.TIMER_D}),
            State.ACCEPTED: frozenset({Input.TIMER_M}),
        }
    )
    INITIAL = State.CALLING
    ack: Request | None = field(default=None, init=False)

    def start(self, now: float) -> None:
        self._send_request()
        if not self.reliable:
            self.intervals[Input.TIMER_A] = self.config.t1
            self.start_timer(Input.TIMER_A, self.config.t1, now)
        self.start_timer(Input.TIMER_B, self.config.timer_b, now)

    def retransmit_a(self, now: float, message: Message | None) -> None:
        # §17.1.1.2: A doubles each time, without the T2 cap non-INVITE uses.
        self._send_request()
        interval = self.intervals[Input.TIMER_A] * 2
        self.intervals[Input.TIMER_A] = interval
        self.start_timer(Input.TIMER_A, interval, now)

    def send_ack(self, now: float, message: Message | None) -> None:
        assert isinstance(message, Response)
        self.ack = make_ack(self.request, message)
        self.host.transmit(self, bytes(self.ack), self.peer)

    def resend_ack(self, now: float, message: Message | None) -> None:
        if self.ack is not None:
            self.host.transmit(self, bytes(self.ack), self.peer)

    def start_d(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_D, 0.0 if self.reliable else self.config.timer_d, now)

    def start_m(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_M, self.config.timer_m, now)


_NON_INVITE_TABLE: Mapping[tuple[State, Input], Transition] = MappingProxyType(
    {
        # §17.1.2.2 Trying: E retransmits, doubling up to T2; F bounds the transaction.
        (_S.TRYING, _I.TIMER_E): _T(_S.TRYING, ("retransmit_e",)),
        (_S.TRYING, _I.TIMER_F): _T(_S.TERMINATED, ("inform_timeout",)),
        (_S.TRYING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        (_S.TRYING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("pass_up",)),
        (_S.TRYING, _I.SUCCESS): _T(_S.COMPLETED, ("pass_up", "start_k")),
        (_S.TRYING, _I.FAILURE): _T(_S.COMPLETED, ("pass_up", "start_k")),
        # §17.1.2.2 Proceeding: E keeps firing, now every T2.
        (_S.PROCEEDING, _I.TIMER_E): _T(_S.PROCEEDING, ("retransmit_e_t2",)),
        (_S.PROCEEDING, _I.TIMER_F): _T(_S.TERMINATED, ("inform_timeout",)),
        (_S.PROCEEDING, _I.TRANSPORT_ERROR): _T(_S.TERMINATED, ("inform_transport_error",)),
        (_S.PROCEEDING, _I.PROVISIONAL): _T(_S.PROCEEDING, ("pass_up",)),
        (_S.PROCEEDING, _I.SUCCESS): _T(_S.COMPLETED, ("pass_up", "start_k")),
        (_S.PROCEEDING, _I.FAILURE): _T(_S.COMPLETED, ("pass_up", "start_k")),
        # §17.1.2.2 Completed: absorb response retransmissions until K (T4 / 0).
        (_S.COMPLETED, _I.PROVISIONAL): _T(_S.COMPLETED),
        (_S.COMPLETED, _I.SUCCESS): _T(_S.COMPLETED),
        (_S.COMPLETED, _I.FAILURE): _T(_S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_K): _T(_S.TERMINATED),
    }
)


@dataclass(eq=False)
class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 Figure 6."""

    TABLE = _NON_INVITE_TABLE
    STATE_TIMERS = MappingProxyType(
        {
            State.TRYING: frozenset({Input.TIMER_E, Input.TIMER_F}),
            State.PROCEEDING: frozenset({Input.TIMER_E, Input.TIMER_F}),
            State.COMPLETED: frozenset({Input.TIMER_K}),
        }
    )
    INITIAL = State.TRYING

    def start(self, now: float) -> None:
        self._send_request()
        if not self.reliable:
            self.intervals[Input.TIMER_E] = self.config.t1
            self.start_timer(Input.TIMER_E, self.config.t1, now)
        self.start_timer(Input.TIMER_F, self.config.timer_f, now)

    def retransmit_e(self, now: float, message: Message | None) -> None:
        self._send_request()
        interval = min(self.intervals[Input.TIMER_E] * 2, self.config.t2)
        self.intervals[Input.TIMER_E] = interval
        self.start_timer(Input.TIMER_E, interval, now)

    def retransmit_e_t2(self, now: float, message: Message | None) -> None:
        self._send_request()
        self.intervals[Input.TIMER_E] = self.config.t2
        self.start_timer(Input.TIMER_E, self.config.t2, now)

    def start_k(self, now: float, message: Message | None) -> None:
        self.start_timer(Input.TIMER_K, 0.0 if self.reliable else self.config.timer_k, now)
