"""Stateless forwarding (RFC 3261 §16.11): ACK for 2xx, stray responses, handed-over
requests. Nothing is remembered; branches are derived from the request itself so a
retransmission takes the same branch."""

from __future__ import annotations

from collections.abc import Callable

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.sip import ParseError, Request, Response
from sipmesh.sip.transaction import Address
from sipmesh.sip.transaction.common import default_port

from . import forward as fw
from .flowtoken import FlowTokens, with_route_flow
from .nat import pop_ruri_alias
from .stats import EdgeStats
from .txdriver import HANDOVER

__all__ = ["StatelessForwarder"]


class StatelessForwarder:
    def __init__(
        self,
        *,
        edge_id: str,
        transmit: Callable[[bytes, Address], None],
        local_address: Callable[[str, str], tuple[str, int]],
        is_myself: Callable[[str, int | None], bool],
        stats: EdgeStats,
        max_forwards: int = 70,
        tokens: FlowTokens | None = None,
    ) -> None:
        self._edge_id = edge_id
        self.tokens = tokens
        self._transmit = transmit
        self._local = local_address
        self.is_myself = is_myself
        self._stats = stats
        self._max_forwards = max_forwards

    def forward_response(self, response: Response) -> bool:
        """A response matching no client transaction: pop our Via, send to the next.

        RFC 3261 §16.7 step 3 / §18.2.2: the next Via says where (received/rport for
        a client behind NAT, RFC 3581 §4). A response whose top Via is not ours, or
        that has no Via left (the answer to our own keep-alive), is dropped.
        """
        self._stats.reply_received(response.status)
        try:
            vias = response.vias
        except ParseError:
            vias = []
        if len(vias) < 2 or not self.is_myself(vias[0].host.strip("[]"), vias[0].port):
            self._stats.drop_replies.inc()
            return False
        response.pop_first("Via")
        nxt = vias[1]
        host = (nxt.received or nxt.host).strip("[]")
        port = nxt.port or default_port(nxt.transport)
        if nxt.rport:
            port = int(nxt.rport)
        self._transmit(bytes(response), Address(nxt.transport, host, port))
        self._stats.fwd_replies.inc()
        return True

    def forward_request(self, request: Request, target: router_pb2.Target | None) -> bool:
        """Forward without a transaction (Kamailio's forward()): ACK for 2xx."""
        dest = self.prepare(request, target, fw.stateless_branch)
        if dest is None:
            return False
        self._transmit(bytes(request), dest)
        self._stats.fwd_requests.inc()
        return True

    def send(self, data: bytes, dest: Address) -> None:
        """Send prepared bytes (a repeated ACK)."""
        self._transmit(data, dest)

    def prepare(
        self,
        request: Request,
        target: router_pb2.Target | None,
        branch: Callable[[Request], str],
    ) -> Address | None:
        """Route ``request`` as a proxy would (§16.6 steps 6-8): target, own Routes
        stripped, NAT alias, Max-Forwards, our Via with ``branch(request)``; returns
        where to send it, None (counted as dropped) when it cannot go anywhere."""
        if target is not None:
            if target.uri:
                request.uri = target.uri
            fw.apply_edits(request, target.edits)
            fw.push_routes(request, target.path)
        popped = fw.strip_own_routes(request, self.is_myself)
        if self.tokens is not None:
            # A flow named by token (the ACK of a dialog, RFC 5626 §5.3).
            target = self.tokens.resolve(with_route_flow(target, popped, request))
        alias = pop_ruri_alias(request)
        hop = fw.next_hop(request, target, self._edge_id)
        if (
            alias is not None
            and request.get("Route") is None
            and (
                target is None or not (target.flow_id or target.dst_uri or target.destination.host)
            )
        ):
            hop = fw.Hop(alias[0].lower(), alias[1], alias[2])
        if hop is None:
            self._stats.dropped("unroutable")
            return None
        try:
            mf = request.max_forwards
        except ParseError:
            mf = None
        if mf == 0:
            self._stats.dropped("max-forwards")
            return None
        request.set("Max-Forwards", str(self._max_forwards if mf is None else mf - 1))
        family = "6" if ":" in hop.host else "4"
        host, port = self._local(hop.transport, family)
        fw.add_via(request, hop.transport, host, port, branch(request))
        flow = hop.flow_id
        if hop.edge_id is not None:
            flow = f"{HANDOVER}{hop.edge_id}|{hop.flow_id}"
        return Address(hop.transport.upper(), hop.host, hop.port, flow)
