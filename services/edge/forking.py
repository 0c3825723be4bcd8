"""How a Relay decision becomes branches: parallel forking, or groups tried in turn
for serial forking (t_next_contacts), higher q first (RFC 3261 §16.6, §20.10); each
branch a copy of the router's edited request with its target's R-URI, edits and
Path, Max-Forwards, Record-Route and Via (§16.6), the flow it must leave on (RFC
5626), and its own client transaction and fr_timer.

A mixin of ProxyCore (its methods run on the core, ``self: CoreHost``).
"""

from __future__ import annotations

import logging
from itertools import groupby
from typing import TYPE_CHECKING

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.observe.spans import Spans
from sipmesh.sip import ParseError, Request, parse_message
from sipmesh.sip.transaction import Address, TransactionError

from . import forward as fw
from .branches import Branch, ProxyTransaction
from .flowtoken import flow_target, rr_flows, with_route_flow
from .nat import pop_ruri_alias
from .txdriver import HANDOVER

if TYPE_CHECKING:
    from .corehost import CoreHost

__all__ = ["Forking"]

log = logging.getLogger("sipmesh.edge.proxy")


class Forking:
    def _relay(self: CoreHost, ptx: ProxyTransaction, relay: router_pb2.Relay) -> None:
        if relay.fr_timer_ms:
            ptx.fr_timer = relay.fr_timer_ms / 1000
        if relay.fr_inv_timer_ms:
            ptx.fr_inv_timer = relay.fr_inv_timer_ms / 1000
        if relay.handlers.ListFields():
            ptx.handlers = relay.handlers
        ptx.record_route = relay.record_route
        ptx.record_route_params = relay.record_route_params
        if self._dialogs is not None and relay.record_route and ptx.invite:
            self._dialogs.started(ptx)
        targets: list[router_pb2.Target | None] = list(relay.targets) or [None]
        if relay.mode == router_pb2.Relay.FORK_MODE_SERIAL and relay.targets:
            ordered = sorted(relay.targets, key=lambda t: t.group)
            groups = [list(g) for _, g in groupby(ordered, key=lambda t: t.group)]
            first: list[router_pb2.Target | None] = list(groups[0])
            ptx.pending_groups = groups[1:]
            self._start_group(ptx, first)
        else:
            self._start_group(ptx, targets)

    def _start_group(
        self: CoreHost, ptx: ProxyTransaction, targets: list[router_pb2.Target | None]
    ) -> None:
        # Higher q first (RFC 3261 §16.6); no q counts as 1.0 (§20.10).
        ranked = sorted(targets, key=lambda t: -(t.q if t is not None and t.HasField("q") else 1.0))
        if ptx.handlers.branch:
            # branch_route armed: one router call per branch before it is sent.
            ptx.routing = True
            with Spans.current(ptx.span):
                self._spawn(self._branch_routes(ptx, ranked))
            return
        for target in ranked:
            self._send_branch(ptx, target, self._branch_request(ptx, target))
        self._check_done(ptx)

    def _branch_request(
        self: CoreHost, ptx: ProxyTransaction, target: router_pb2.Target | None
    ) -> Request:
        assert ptx.base is not None
        request = parse_message(bytes(ptx.base), lazy=True)  # our own validated copy
        assert isinstance(request, Request)
        if target is not None:
            if target.uri:
                request.uri = target.uri
            fw.apply_edits(request, target.edits)
            fw.push_routes(request, target.path)
        return request

    def _send_branch(
        self: CoreHost,
        ptx: ProxyTransaction,
        target: router_pb2.Target | None,
        request: Request,
        via_branch: str | None = None,
        extra_rr_params: str = "",
    ) -> None:
        index = len(ptx.branches)
        rr_params = ptx.record_route_params + extra_rr_params
        popped = fw.strip_own_routes(request, self._sl.is_myself)
        alias = pop_ruri_alias(request)
        if self._tokens is not None:
            target = with_route_flow(target, popped, request)
            target = flow_target(self._tokens, target, self._cfg.edge_id, ptx.source.flow)
        hop = fw.next_hop(request, target, self._cfg.edge_id)
        explicit = target is not None and (
            target.flow_id or target.dst_uri or target.destination.host
        )
        if alias is not None and not explicit and request.get("Route") is None:
            # handle_ruri_alias: the alias names the NATed peer's real address.
            hop = fw.Hop(alias[0].lower(), alias[1], alias[2])
        if hop is None:
            ptx.branches.append(
                Branch(
                    index, target, request, fw.Hop("udp", "", 0), Address("UDP", "", 0), status=478
                )
            )
            return
        try:
            fw.decrement_max_forwards(request, self._cfg.max_forwards)
        except ParseError:
            request.set("Max-Forwards", str(self._cfg.max_forwards))
        family = "6" if ":" in hop.host else "4"
        out_host, out_port = self._local(hop.transport, family)
        if ptx.record_route:
            if self._tokens is not None:
                rr_params += rr_flows(self._tokens, ptx, hop, self._cfg.edge_id)
            in_transport = ptx.source.transport.lower()
            in_family = "6" if ":" in ptx.source.host else "4"
            in_host, in_port = self._local(in_transport, in_family)
            fw.add_record_route(
                request,
                (in_transport, in_host, in_port),
                (hop.transport, out_host, out_port),
                rr_params,
            )
        via_branch = via_branch or fw.new_branch()
        fw.add_via(request, hop.transport, out_host, out_port, via_branch)
        flow: str | None = hop.flow_id
        if hop.edge_id is not None:
            flow = f"{HANDOVER}{hop.edge_id}|{hop.flow_id}"
        dest = Address(hop.transport.upper(), hop.host, hop.port, flow)
        branch = Branch(index, target, request, hop, dest, via_branch=via_branch)
        ptx.branches.append(branch)
        try:
            branch.tx_id = self._layer.send_request(request, dest, self._loop.time())
        except TransactionError as exc:
            log.debug("branch not sent: %s", exc)
            branch.status = 500
            return
        self._clients[branch.tx_id] = (ptx, branch)
        self._stats.fwd_requests.inc()
        branch.timer = self._loop.call_later(ptx.fr_timer, self._branch_timeout, ptx, branch)
