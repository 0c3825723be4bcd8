"""Requests other components hand to this edge (Edge.Send, issue 4 item 6).

A request for a flow this edge owns (a TCP/TLS/WS connection or a NATed UDP binding,
RFC 5626 §5.3) arrives here from another edge instance or from a service such as
presence. Stateless items (a proxy branch handed over by the edge that runs its
transaction, keep-alives) are pushed out with our Via on top, so the responses come
back here and are forwarded along the Via below (RFC 3261 §16.11); the others run in a
client transaction here and the final response is returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2, router_pb2
from sipmesh.sip import ParseError, Request, parse_message
from sipmesh.sip.transaction import (
    Address,
    Event,
    ResponseReceived,
    TransactionError,
    TransactionTimeout,
    TransportFailure,
)

from . import forward as fw
from .stateless import StatelessForwarder
from .stats import EdgeStats
from .txdriver import TxDriver

__all__ = ["Outbound"]

_Result = edge_pb2.SendResult
_Kind = common_pb2.OutboundRequest


class Outbound:
    def __init__(
        self,
        driver: TxDriver,
        stateless: StatelessForwarder,
        local_address: Callable[[str, str], tuple[str, int]],
        edge_id: str,
        *,
        stats: EdgeStats | None = None,
    ) -> None:
        self._driver = driver
        self._stats = stats
        self._sl = stateless
        self._local = local_address
        self._edge_id = edge_id
        self._waiting: dict[str, asyncio.Future[_Result]] = {}

    def on_event(self, event: Event) -> bool:
        """Resolve our own client transactions; False for events of the proxy core."""
        if not self._waiting:
            return False
        tx_id = getattr(event, "tx_id", None)
        future = self._waiting.get(tx_id) if isinstance(tx_id, str) else None
        if future is None:
            return False
        if isinstance(event, ResponseReceived):
            if event.response.status >= 200 and not future.done():
                future.set_result(
                    _Result(
                        outcome=_Result.OUTCOME_RESPONSE,
                        status=event.response.status,
                        response=bytes(event.response),
                    )
                )
            return True
        if isinstance(event, TransactionTimeout | TransportFailure) and not future.done():
            outcome = (
                _Result.OUTCOME_TIMEOUT
                if isinstance(event, TransactionTimeout)
                else _Result.OUTCOME_TRANSPORT_ERROR
            )
            future.set_result(_Result(outcome=outcome))
            return True
        return False

    def _owned(self, request: common_pb2.OutboundRequest) -> bool:
        if request.edge_id and request.edge_id != self._edge_id:
            return False
        if not request.flow_id:
            return True
        return self._driver.flow_of(request.flow_id) is not None

    def _target(self, request: common_pb2.OutboundRequest) -> router_pb2.Target:
        target = router_pb2.Target(flow_id=request.flow_id, edge_id=self._edge_id)
        if request.HasField("destination"):
            target.destination.CopyFrom(request.destination)
        return target

    async def send(
        self,
        request: common_pb2.OutboundRequest,
        *,
        timeout: float | None = None,
    ) -> _Result:
        if not self._owned(request):
            return _Result(outcome=_Result.OUTCOME_NO_FLOW, detail="flow not owned here")
        if request.kind == _Kind.KIND_KEEPALIVE_CRLF:
            flow = self._driver.flow_of(request.flow_id)
            if flow is None:
                return _Result(outcome=_Result.OUTCOME_NO_FLOW)
            self._driver.transmit(
                b"\r\n\r\n", Address(flow.transport.upper(), *flow.remote, flow.flow_id)
            )
            return _Result(outcome=_Result.OUTCOME_SENT)
        try:
            message = parse_message(request.raw)
        except ParseError as exc:
            return _Result(outcome=_Result.OUTCOME_TRANSPORT_ERROR, detail=str(exc))
        if not isinstance(message, Request):
            return _Result(outcome=_Result.OUTCOME_TRANSPORT_ERROR, detail="not a request")
        target = self._target(request) if (request.flow_id or request.destination.host) else None
        if request.stateless or message.method == "ACK":
            sent = self._sl.forward_request(message, target)
            self._driver.pump()
            outcome = _Result.OUTCOME_SENT if sent else _Result.OUTCOME_TRANSPORT_ERROR
            return _Result(outcome=outcome)
        return await self._transaction(message, target, timeout)

    async def _transaction(
        self,
        message: Request,
        target: router_pb2.Target | None,
        timeout: float | None,
    ) -> _Result:
        hop = fw.next_hop(message, target, self._edge_id)
        if hop is None:
            return _Result(outcome=_Result.OUTCOME_TRANSPORT_ERROR, detail="no next hop")
        host, port = self._local(hop.transport, "6" if ":" in hop.host else "4")
        fw.add_via(message, hop.transport, host, port, fw.new_branch())
        dest = Address(hop.transport.upper(), hop.host, hop.port, hop.flow_id)
        loop = asyncio.get_running_loop()
        try:
            tx_id = self._driver.layer.send_request(message, dest, self._driver.now())
        except TransactionError as exc:
            return _Result(outcome=_Result.OUTCOME_TRANSPORT_ERROR, detail=str(exc))
        if self._stats is not None:
            self._stats.uac_started += 1  # tmx:UAC_transactions, a locally sent request
        future: asyncio.Future[_Result] = loop.create_future()
        self._waiting[tx_id] = future
        self._driver.pump()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return _Result(outcome=_Result.OUTCOME_TIMEOUT)
        finally:
            self._waiting.pop(tx_id, None)
