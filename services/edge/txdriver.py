"""Drive the sans-IO TransactionLayer with the event loop's clock and the transports.

The layer never reads a clock or touches a socket (DESIGN.md principle 1); this driver
is the thin adapter: every input is stamped with ``loop.time()``, after every input
the queued datagrams are handed to the transports, the events go to the proxy core,
and exactly one asyncio TimerHandle tracks ``get_timer()``.

Addresses: the layer's ``Address.flow`` carries the transport's flow id, so responses
and in-flow requests go back over the connection they belong to (RFC 3261 §18.2.2,
RFC 5626). A flow id starting with ``handover:`` means "another edge instance owns
this flow": those datagrams go to the handover callback instead of a socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from sipmesh.edge.transport.base import Flow
from sipmesh.sip import Message
from sipmesh.sip.transaction import Address, Event, TransactionLayer

__all__ = ["HANDOVER", "Sender", "TxDriver"]

log = logging.getLogger("sipmesh.edge.tx")

HANDOVER = "handover:"


class Sender(Protocol):
    """The part of TransportManager the edge core sends with."""

    def send(self, data: bytes, flow: Flow) -> None: ...

    async def send_to(
        self, data: bytes, transport: str, host: str, port: int, *, flow_id: str | None = None
    ) -> Flow: ...

    def flow(self, flow_id: str) -> Flow | None: ...


class TxDriver:
    def __init__(
        self,
        layer: TransactionLayer,
        sender: Sender,
        on_event: Callable[[Event], None],
        *,
        loop: asyncio.AbstractEventLoop,
        handover: Callable[[bytes, Address], bool] | None = None,
    ) -> None:
        self.layer = layer
        self._sender = sender
        self._on_event = on_event
        self._loop = loop
        self._handover = handover
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pending_sends: set[asyncio.Task[None]] = set()
        self._pumping = False

    def now(self) -> float:
        return self._loop.time()

    # -- inputs ------------------------------------------------------------------

    def receive(self, message: Message | bytes, source: Address) -> None:
        self.layer.receive(message, source, self.now())
        self.pump()

    def pump(self) -> None:
        """Deliver events, flush datagrams and re-arm the timer (after every input)."""
        if self._pumping:
            # Called from inside an event handler: the outer pump loop picks up what
            # the handler queued, in order.
            return
        self._pumping = True
        try:
            self._pump()
        finally:
            self._pumping = False

    def _pump(self) -> None:
        layer = self.layer
        # Events may make the proxy core send more; loop until the layer is quiet so
        # nothing queued is left behind.
        while True:
            event = layer.next_event()
            if event is None:
                break
            try:
                self._on_event(event)
            except Exception:
                log.exception("edge core failed on %s", type(event).__name__)
        for data, dest in layer.datagrams_to_send():
            self.transmit(data, dest)
        self._arm()

    def flow_of(self, flow_id: str) -> Flow | None:
        return self._sender.flow(flow_id)

    # -- sending -------------------------------------------------------------------

    def transmit(self, data: bytes, dest: Address) -> None:
        flow_id = dest.flow
        if flow_id is not None:
            if flow_id.startswith(HANDOVER):
                if self._handover is None or not self._handover(data, dest):
                    self._unreachable(dest)
                return
            flow = self._sender.flow(flow_id)
            # A UDP "flow" is only the peer's address: use it when the destination
            # is that address (a response without rport may go to another port).
            if flow is not None and (
                flow.reliable or not dest.host or flow.remote == (dest.host, dest.port)
            ):
                try:
                    self._sender.send(data, flow)
                except Exception as exc:
                    log.debug("send over flow %s failed: %s", flow_id, exc)
                    self._unreachable(dest)
                return
        task = self._loop.create_task(self._send_to(data, dest))
        self._pending_sends.add(task)
        task.add_done_callback(self._pending_sends.discard)

    async def _send_to(self, data: bytes, dest: Address) -> None:
        try:
            await self._sender.send_to(data, dest.transport.lower(), dest.host, dest.port)
        except Exception as exc:
            log.debug("send to %s:%s failed: %s", dest.host, dest.port, exc)
            self._unreachable(dest)

    def _unreachable(self, dest: Address) -> None:
        # RFC 3261 §17.1.4 / §18.4: the transport error goes to every transaction
        # that talks to this destination.
        if self.layer.report_unreachable(dest, self.now()):
            self._loop.call_soon(self.pump)

    # -- timer ---------------------------------------------------------------------

    def _arm(self) -> None:
        deadline = self.layer.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self.now())
        self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._pending_sends):
            task.cancel()
