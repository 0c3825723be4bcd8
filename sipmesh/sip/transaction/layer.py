"""The transaction layer as one sans-IO object (RFC 3261 §17), driven like aioquic.

Feed it what arrives (:meth:`TransactionLayer.receive`) and what the TU wants to
send (:meth:`send_request`, :meth:`send_response`); drain :meth:`next_event` and
:meth:`datagrams_to_send`; call :meth:`handle_timer` when :meth:`get_timer` says.
Time is always passed in; nothing here sleeps, reads a clock or touches a socket.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

from sipmesh.sip.errors import ParseError
from sipmesh.sip.message import Message, Request, Response
from sipmesh.sip.transaction.client import (
    ClientTransaction,
    InviteClientTransaction,
    NonInviteClientTransaction,
)
from sipmesh.sip.transaction.common import (
    AckReceived,
    Address,
    CancelReceived,
    Event,
    Input,
    MalformedMessage,
    RequestReceived,
    State,
    StrayResponse,
    Transaction,
    TransactionError,
    TransactionTerminated,
    client_key,
    response_address,
    response_input,
    server_key,
)
from sipmesh.sip.transaction.server import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    ServerTransaction,
)
from sipmesh.sip.transaction.timers import TimerConfig

__all__ = ["TransactionLayer"]


class TransactionLayer:
    """Client and server transactions of one SIP element, keyed per §17.1.3/§17.2.3."""

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config or TimerConfig()
        self._clients: dict[str, ClientTransaction] = {}
        self._servers: dict[str, ServerTransaction] = {}
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Address]] = []
        self._heap: list[tuple[float, int, str, Input]] = []
        self._seq = itertools.count()
        #: Server transactions created since start (tmx's UAS_transactions): a plain
        #: int, read at scrape time, so counting costs the hot path nothing more.
        self.servers_started = 0

    # -- inputs --------------------------------------------------------------------

    def receive(self, message: Message | bytes, source: Address, now: float) -> None:
        """A message from the network. Bytes are parsed first; a request that does not
        parse but can be answered gets the parser's status statelessly (§16.3 / §8.2)."""
        if isinstance(message, bytes):
            parsed = self._parse(message, source)
            if parsed is None:
                return
            message = parsed
        if isinstance(message, Request):
            self._receive_request(message, source, now)
        elif isinstance(message, Response):
            self._receive_response(message, source, now)

    def send_request(self, request: Request, dest: Address, now: float) -> str:
        """Start a client transaction for ``request`` (top Via with a branch already
        added by the TU) towards ``dest``; returns its id."""
        if request.method == "ACK":
            raise TransactionError("ACK is not a transaction: use send_stateless")
        tx_id = client_key(request)
        if tx_id in self._clients:
            raise TransactionError(f"a client transaction {tx_id!r} already exists")
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        tx = cls(tx_id=tx_id, request=request, peer=dest, config=self.config, host=self)
        self._clients[tx_id] = tx
        tx.start(now)
        return tx_id

    def send_response(self, tx_id: str, response: Response, now: float) -> None:
        """Hand a response for server transaction ``tx_id`` to its state machine."""
        tx = self._servers.get(tx_id)
        if tx is None:
            raise TransactionError(f"no server transaction {tx_id!r}")
        if not tx.fire(response_input(response.status), now, response):
            raise TransactionError(
                f"{tx_id!r} cannot send {response.status} in state {tx.state.value}"
            )

    def send_stateless(self, message: Message, dest: Address) -> None:
        """Queue a message outside any transaction (ACK for 2xx, stateless replies)."""
        self._out.append((bytes(message), dest))

    def report_transport_error(self, tx_id: str, now: float) -> bool:
        """The transport could not send for ``tx_id`` (§17.1.4 / §17.2.4)."""
        tx = self._lookup(tx_id)
        return tx is not None and tx.fire(Input.TRANSPORT_ERROR, now)

    def stop_retransmissions(self, tx_id: str) -> bool:
        """Stop resending a client request that was given up before any answer.

        A proxy whose fr_timer fires on a branch that sent nothing back (§16.8 ends
        the branch with 408; without a provisional it must not CANCEL, §9.1) stops
        retransmitting, as Kamailio's tm does: otherwise a destination that comes
        back later still receives, and answers, a call the proxy gave up long ago.
        The transaction stays, to absorb a late response, until timer B/F ends it.
        Returns True when retransmissions were running.
        """
        tx = self._clients.get(tx_id)
        if tx is None:
            return False
        stopped = [tx.timers.pop(name, None) for name in (Input.TIMER_A, Input.TIMER_E)]
        return any(deadline is not None for deadline in stopped)

    def report_unreachable(self, dest: Address, now: float) -> list[str]:
        """A destination or flow failed (ICMP error, TCP reset): every transaction
        talking to it gets a transport error. Returns the ids that were told."""
        hit = [
            tx.tx_id
            for tx in [*self._clients.values(), *self._servers.values()]
            if tx.peer == dest or (dest.flow is not None and tx.peer.flow == dest.flow)
        ]
        return [tx_id for tx_id in hit if self.report_transport_error(tx_id, now)]

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self._heap and self._heap[0][0] <= now:
            deadline, _, tx_id, name = heapq.heappop(self._heap)
            tx = self._lookup(tx_id)
            if tx is None or tx.timers.get(name) != deadline:
                continue  # cancelled, restarted or transaction gone
            del tx.timers[name]
            tx.fire(name, now)

    # -- outputs -------------------------------------------------------------------

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """The earliest pending deadline, or None when no timer runs."""
        while self._heap:
            deadline, _, tx_id, name = self._heap[0]
            tx = self._lookup(tx_id)
            if tx is not None and tx.timers.get(name) == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    # -- inspection ----------------------------------------------------------------

    def state(self, tx_id: str) -> State | None:
        """State of a live transaction (None once terminated)."""
        tx = self._lookup(tx_id)
        return None if tx is None else tx.state

    def request_of(self, tx_id: str) -> Request | None:
        tx = self._lookup(tx_id)
        return None if tx is None else tx.request

    @property
    def transaction_count(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- TransactionHost (called by the transactions) --------------------------------

    def transmit(self, tx: Transaction, data: bytes, dest: Address) -> None:
        self._out.append((data, dest))

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def schedule(self, tx: Transaction, name: Input, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), tx.tx_id, name))

    def terminated(self, tx: Transaction) -> None:
        if isinstance(tx, ClientTransaction):
            self._clients.pop(tx.tx_id, None)
        else:
            self._servers.pop(tx.tx_id, None)
        self._events.append(TransactionTerminated(tx.tx_id))

    # -- internals -----------------------------------------------------------------

    def _lookup(self, tx_id: str) -> Transaction | None:
        return self._clients.get(tx_id) or self._servers.get(tx_id)

    def _parse(self, data: bytes, source: Address) -> Message | None:
        from sipmesh.sip.parser import parse_message
        from sipmesh.sip.stateless import make_response

        try:
            return parse_message(data)
        except ParseError as exc:
            self._events.append(MalformedMessage(exc, source))
            partial = exc.partial
            if partial is not None and partial.method != "ACK":
                try:
                    reply = make_response(partial, exc.status_hint, to_tag=None)
                    dest = response_address(partial, source)
                except (ParseError, ValueError):
                    return None
                self._out.append((bytes(reply), dest))
            return None

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        try:
            key = server_key(request)
        except (TransactionError, ParseError) as exc:
            self._events.append(MalformedMessage(ParseError(str(exc)), source))
            return
        if request.method == "ACK":
            self._receive_ack(key, request, source, now)
            return
        existing = self._servers.get(key)
        if existing is not None:
            # §17.2.3: a retransmission; the machine resends or absorbs.
            existing.fire(Input.REQUEST, now, request)
            return
        cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
        tx = cls(
            tx_id=key,
            request=request,
            peer=response_address(request, source),
            config=self.config,
            host=self,
            source=source,
        )
        self._servers[key] = tx
        self.servers_started += 1
        if request.method == "CANCEL":
            # §9.2: CANCEL is its own transaction; find the INVITE it targets.
            target = self._servers.get(server_key(request, method="INVITE"))
            invite_id = target.tx_id if isinstance(target, InviteServerTransaction) else None
            self._events.append(CancelReceived(key, invite_id, request, source))
        else:
            self._events.append(RequestReceived(key, request, source))
        tx.start(now)

    def _receive_ack(self, key: str, request: Request, source: Address, now: float) -> None:
        tx = self._servers.get(key)
        if isinstance(tx, InviteServerTransaction):
            # §17.2.3 for RFC 2543 peers: the ACK's To tag must be the one we sent.
            tag_ok = not key.startswith("s2543|") or tx.to_tag == request.to.tag
            if tag_ok and tx.fire(Input.ACK, now, request):
                return
        # An ACK for a 2xx (new branch, RFC 3261 §17.1.1.3) or for nothing we know.
        self._events.append(AckReceived(None, request, source))

    def _receive_response(self, response: Response, source: Address, now: float) -> None:
        try:
            key = client_key(response)
        except (TransactionError, ParseError):
            self._events.append(StrayResponse(response, source))
            return
        tx = self._clients.get(key)
        if tx is None:
            self._events.append(StrayResponse(response, source))
            return
        if not tx.fire(response_input(response.status), now, response) and (
            200 <= response.status < 300
        ):
            # A 2xx the machine has no edge for (INVITE tx already Completed) still
            # matters to a proxy, which forwards 2xx statelessly (RFC 6026 §7.2).
            self._events.append(StrayResponse(response, source))
