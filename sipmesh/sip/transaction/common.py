"""What the transaction machines share: addresses, events, keys, the table runner."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from sipmesh.sip.errors import ParseError
from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.transaction.timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "Address",
    "CancelReceived",
    "Event",
    "Input",
    "MalformedMessage",
    "RequestReceived",
    "ResponseReceived",
    "State",
    "StrayResponse",
    "Transaction",
    "TransactionError",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transition",
    "TransportFailure",
    "client_key",
    "default_port",
    "is_reliable",
    "response_address",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7

# Transports that deliver reliably: no retransmission timers, zero wait timers (§17).
_RELIABLE = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def is_reliable(transport: str) -> bool:
    return transport.upper() in _RELIABLE


def default_port(transport: str) -> int:
    """RFC 3261 §19.1.2 / §18.2.2: 5061 for TLS, 5060 otherwise."""
    return 5061 if transport.upper() in ("TLS", "TLS-SCTP") else 5060


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message came from or goes to. ``flow`` names a connection (TCP/TLS/WS)
    so that responses go back over the same one (RFC 3261 §18.2.2, RFC 5626)."""

    transport: str
    host: str
    port: int
    flow: str | None = None

    @property
    def reliable(self) -> bool:
        return is_reliable(self.transport)


class TransactionError(ValueError):
    """The TU asked for something the transaction cannot do (unknown id, wrong state)."""


# -- events (what next_event() returns) --------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU; answer it with send_response(tx_id, …)."""

    tx_id: str
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction (every 1xx, the final, 2xx retransmissions)."""

    tx_id: str
    response: Response


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (end to end, RFC 3261 §17.1.1.3 / RFC 6026 §8.7).

    ``tx_id`` is the INVITE server transaction in Accepted state it matched, or None
    when it matched none (the usual case: a 2xx ACK carries a new branch).
    """

    tx_id: str | None
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL, which is its own non-INVITE server transaction (RFC 3261 §9.2).

    ``invite_tx_id`` is the INVITE server transaction it targets, or None (answer the
    CANCEL with 481 then).
    """

    cancel_tx_id: str
    invite_tx_id: str | None
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F or H fired (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1)."""

    tx_id: str


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """Sending failed for this transaction (RFC 3261 §17.1.4, §17.2.4)."""

    tx_id: str


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    tx_id: str


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matching no client transaction (RFC 3261 §17.1.3: goes to the core;
    a proxy forwards 2xx statelessly per §16.7 step… and drops the rest)."""

    response: Response
    source: Address


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """Bytes that did not parse; an answer was queued if one could be built."""

    error: ParseError
    source: Address


Event = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | CancelReceived
    | TransactionTimeout
    | TransportFailure
    | TransactionTerminated
    | StrayResponse
    | MalformedMessage
)


# -- matching keys -----------------------------------------------------------------


def client_key(message: Message) -> str:
    """RFC 3261 §17.1.3: top Via branch plus CSeq method."""
    via = message.top_via
    if via is None or not via.branch:
        raise TransactionError("message has no top Via branch")
    return f"c|{via.branch}|{message.cseq.method}"


def server_key(request: Request, *, method: str | None = None) -> str:
    """RFC 3261 §17.2.3: the server transaction a request belongs to.

    With the magic cookie: branch, sent-by and method (ACK counts as INVITE).
    Without it (RFC 2543 peers): Request-URI, From tag, Call-ID, CSeq number, top
    Via and the method; the To tag joins the key for non-INVITE requests, while for
    INVITE/ACK it is checked against the response instead (done by the caller).
    ``method`` overrides the request's own (CANCEL looks up its INVITE with it).
    """
    via = request.top_via
    if via is None:
        raise TransactionError("request has no Via")
    meth = method or request.method
    if meth == "ACK":
        meth = "INVITE"
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return f"s|{branch}|{via.host.lower()}:{via.port or ''}|{meth}"
    parts = [
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        f"{via.transport}|{via.host.lower()}|{via.port or ''}|{branch}",
        meth,
        "" if meth == "INVITE" else (request.to.tag or ""),
    ]
    digest = hashlib.blake2s("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return f"s2543|{digest}"


def response_address(request: Request, source: Address) -> Address:
    """Where responses to ``request`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Reliable: back over the same connection. Unreliable: maddr if present; else the
    source address, with the source port when the Via asked for rport and the sent-by
    port (or the default) otherwise.
    """
    if source.reliable:
        return source
    via = request.top_via
    if via is None:
        return source
    if via.maddr:
        return Address(source.transport, via.maddr, via.port or default_port(source.transport))
    if via.rport is not None:
        return source
    return Address(
        source.transport, source.host, via.port or default_port(source.transport), source.flow
    )


# -- state machine runner ------------------------------------------------------------


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 §7.1 / §7.2
    TERMINATED = "Terminated"


class Input(enum.Enum):
    # responses: received by a client tx, or handed down by the TU to a server tx
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    # requests reaching a server tx after it was created
    REQUEST = "request retransmission"
    ACK = "ACK"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_TRYING = "100 Trying delay"


def response_input(status: int) -> Input:
    if status < 200:
        return Input.PROVISIONAL
    if status < 300:
        return Input.SUCCESS
    return Input.FAILURE


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of a state table: the actions (method names) to run, then the state."""

    next: State
    actions: tuple[str, ...] = ()


class TransactionHost(Protocol):
    """What a transaction needs from the layer that owns it."""

    def transmit(self, tx: Transaction, data: bytes, dest: Address) -> None: ...
    def emit(self, event: Event) -> None: ...
    def schedule(self, tx: Transaction, name: Input, deadline: float) -> None: ...
    def terminated(self, tx: Transaction) -> None: ...


@dataclass(eq=False)
class Transaction:
    """Base of the four machines: runs ``TABLE`` and keeps the timers.

    Each subclass supplies ``TABLE`` (keyed by (state, input)) and ``STATE_TIMERS``
    (timers that survive entering a state; every other pending timer is cancelled on
    a state change, which is how the RFC's diagrams read).
    """

    TABLE: ClassVar[Mapping[tuple[State, Input], Transition]]
    STATE_TIMERS: ClassVar[Mapping[State, frozenset[Input]]]
    INITIAL: ClassVar[State]

    tx_id: str
    request: Request
    peer: Address
    config: TimerConfig
    host: TransactionHost
    state: State = field(init=False)
    timers: dict[Input, float] = field(default_factory=dict, init=False)
    intervals: dict[Input, float] = field(default_factory=dict, init=False)
    _immediate: list[Input] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.state = self.INITIAL

    @property
    def reliable(self) -> bool:
        return self.peer.reliable

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def fire(self, event: Input, now: float, message: Message | None = None) -> bool:
        """Run the table row for (state, event); False if the RFC has no such edge."""
        row = self.TABLE.get((self.state, event))
        if row is None:
            return False
        for action in row.actions:
            getattr(self, action)(now, message)
        self._enter(row.next)
        # Timers of zero length (D, I, J, K on reliable transports) fire at once.
        while self._immediate and not self.terminated:
            pending = self._immediate.pop(0)
            if self.timers.pop(pending, None) is not None:
                self.fire(pending, now)
        return True

    def _enter(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        keep = self.STATE_TIMERS.get(state, frozenset())
        for name in [n for n in self.timers if n not in keep]:
            del self.timers[name]
        if state is State.TERMINATED:
            self._immediate.clear()
            self.host.terminated(self)

    def start_timer(self, name: Input, duration: float, now: float) -> None:
        if duration <= 0:
            self.timers[name] = now
            self._immediate.append(name)
            return
        self.timers[name] = now + duration
        self.host.schedule(self, name, now + duration)

    # -- actions shared by all four machines
    def inform_timeout(self, now: float, message: Message | None) -> None:
        self.host.emit(TransactionTimeout(self.tx_id))

    def inform_transport_error(self, now: float, message: Message | None) -> None:
        self.host.emit(TransportFailure(self.tx_id))
