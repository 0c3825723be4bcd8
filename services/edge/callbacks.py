"""The proxy core's calls back to the router: branch_route, reply_route,
failure_route (when armed in Relay.handlers), and request_route for an ACK to a 2xx.

A mixin of ProxyCore (its methods run on the core, ``self: CoreHost``). The router
is called only for the handlers it armed: a plain call makes no callback at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import Request, Response
from sipmesh.sip.transaction import Address

from . import forward as fw
from .branches import Branch, ProxyTransaction, best_response
from .media import (
    MediaFailure,
    MediaState,
    ReplyOp,
    has_sdp,
    plan_failure,
    plan_reply,
    plan_request,
)
from .replies import apply_reply_edits

if TYPE_CHECKING:
    from .corehost import CoreHost

__all__ = ["RouterCallbacks"]

log = logging.getLogger("sipmesh.edge.proxy")

_KIND = router_pb2


class RouterCallbacks:
    async def _branch_routes(
        self: CoreHost, ptx: ProxyTransaction, targets: list[router_pb2.Target | None]
    ) -> None:
        """branch_route: the router sees each branch (in parallel) before it leaves;
        its edits, R-URI, body and media ops apply to that branch only, and a drop
        discards the branch (counted as 500 if no branch is left, as t_relay)."""
        first = len(ptx.branches)
        requests = [self._branch_request(ptx, t) for t in targets]
        vias = [fw.new_branch() for _ in targets]
        outcomes = await asyncio.gather(
            *(
                self._branch_route(ptx, first + i, target, request, vias[i])
                for i, (target, request) in enumerate(zip(targets, requests, strict=True))
            )
        )
        ptx.routing = False
        if ptx.final_sent:
            self._media_cleanup(ptx)  # CANCELled meanwhile
            self._driver.pump()
            return
        for target, request, via, outcome in zip(targets, requests, vias, outcomes, strict=True):
            if isinstance(outcome, str):
                self._send_branch(ptx, target, request, via, outcome)
            else:
                status, reason = outcome
                index = len(ptx.branches)
                hop, dest = fw.Hop("udp", "", 0), Address("UDP", "", 0)
                ptx.branches.append(Branch(index, target, request, hop, dest, status=status))
                log.debug("branch %d of %s not sent: %s", index, ptx.tx_id, reason)
        self._check_done(ptx)
        self._driver.pump()

    async def _branch_route(
        self: CoreHost,
        ptx: ProxyTransaction,
        index: int,
        target: router_pb2.Target | None,
        request: Request,
        via_branch: str,
    ) -> str | tuple[int, str]:
        """One branch_route call: the extra Record-Route parameters to send the branch
        with, or (status, why not) when it is not sent."""
        req = router_pb2.RouteRequest(
            kind=_KIND.ROUTE_KIND_BRANCH,
            message=common_pb2.SipMessage(raw=bytes(ptx.request), source=ptx.source_pb),
            transaction_id=ptx.tx_id,
            context=ptx.context,
            handler=ptx.handlers.branch,
            branch_index=index,
        )
        if target is not None:
            req.branch.CopyFrom(target)
        try:
            decision = await self._call_router(req)
        except Exception as exc:
            # Kamailio sends the branch when its branch_route fails to run; so do we.
            self._stats.router_errors.labels("branch").inc()
            log.debug("branch_route failed: %r", exc)
            return ""
        self._remember(ptx, decision)
        if decision.WhichOneof("action") == "drop":
            return 500, "dropped by branch_route"
        fw.apply_decision(request, decision)
        if decision.media_ops:
            try:
                await self._media_request(ptx, request, decision, index, via_branch)
            except MediaFailure as exc:
                return exc.status, exc.reason
        # add_rr_param in branch_route (";nat=yes"): this branch's Record-Route only.
        return decision.record_route_params

    async def _reply_route(
        self: CoreHost, ptx: ProxyTransaction, branch: Branch, response: Response
    ) -> None:
        async with ptx.reply_lock:
            state = ptx.media
            op: ReplyOp | None = None
            via = ""
            if state is not None:
                op, via = state.branches.get(branch.index, (state.reply, ""))
            if ptx.handlers.reply:
                decision = await self._reply_decision(ptx, branch, response)
                self._remember(ptx, decision)
                if decision.WhichOneof("action") == "drop" and response.status < 200:
                    return  # a provisional the script chose not to relay
                apply_reply_edits(response, decision.edits)
                if decision.replace_body:
                    response.body = decision.body
                    if decision.content_type:
                        response.set("Content-Type", decision.content_type)
                if decision.media_ops:
                    reply_op, delete = plan_reply(decision.media_ops)
                    if delete:
                        self._media.delete_later(ptx.request.call_id)
                    elif reply_op is not None:
                        op = reply_op  # via: the branch's own offer's, if any
            if (
                op is not None
                and has_sdp(response)
                and 180 <= response.status < 300
                and not await self._reply_media(ptx, branch, response, op, via)
            ):
                self._driver.pump()
                return
            self._handle_response(ptx, branch, response)
            self._driver.pump()

    async def _reply_decision(
        self: CoreHost, ptx: ProxyTransaction, branch: Branch, response: Response
    ) -> router_pb2.Decision:
        req = router_pb2.RouteRequest(
            kind=_KIND.ROUTE_KIND_REPLY,
            message=common_pb2.SipMessage(raw=bytes(ptx.request), source=ptx.source_pb),
            transaction_id=ptx.tx_id,
            context=ptx.context,
            handler=ptx.handlers.reply,
            branch_index=branch.index,
            reply=bytes(response),
            reply_status=response.status,
        )
        if branch.target is not None:
            req.branch.CopyFrom(branch.target)
        try:
            return await self._call_router(req)
        except Exception as exc:
            self._stats.router_errors.labels("reply").inc()
            log.debug("reply_route failed: %r", exc)
            return router_pb2.Decision(proceed=router_pb2.Proceed())

    async def _failure_route(self: CoreHost, ptx: ProxyTransaction) -> None:
        status, branch = best_response(ptx)
        any_response = any(b.response is not None for b in ptx.branches)
        req = router_pb2.RouteRequest(
            kind=_KIND.ROUTE_KIND_FAILURE,
            message=common_pb2.SipMessage(raw=bytes(ptx.request), source=ptx.source_pb),
            transaction_id=ptx.tx_id,
            context=ptx.context,
            handler=ptx.handlers.failure,
            reply_status=status,
            failure_reason=(
                router_pb2.FAILURE_REASON_RESPONSE if any_response
                else router_pb2.FAILURE_REASON_TIMEOUT
            ),
            branch_statuses=[b.status for b in ptx.branches],
        )  # fmt: skip
        if branch is not None and branch.response is not None:
            req.reply = bytes(branch.response)
        try:
            decision = await self._call_router(req)
        except Exception as exc:
            self._stats.router_errors.labels("failure").inc()
            log.debug("failure_route failed: %r", exc)
            decision = router_pb2.Decision(proceed=router_pb2.Proceed())
        ptx.routing = False
        if ptx.final_sent:
            return
        self._remember(ptx, decision)
        if decision.media_ops and plan_failure(decision.media_ops) and ptx.media is not None:
            # rtpengine_manage in failure_route: the failed branches' media go.
            self._media_cleanup(ptx)
        action = decision.WhichOneof("action")
        if action == "relay" and not ptx.cancelled:
            ptx.base = self._edited_request(ptx, decision)
            ptx.handlers = router_pb2.Handlers()
            if ptx.media is not None:
                ptx.media = MediaState()  # the new branches start afresh (voicemail...)
            self._relay(ptx, decision.relay)
        elif action == "reply":
            self._reply(ptx, decision.reply)
        else:
            self._send_best(ptx)
        self._driver.pump()

    async def _route_ack(self: CoreHost, request: Request, source: common_pb2.Source) -> None:
        req = router_pb2.RouteRequest(
            kind=_KIND.ROUTE_KIND_REQUEST,
            message=common_pb2.SipMessage(raw=bytes(request), source=source),
        )
        try:
            decision = await self._call_router(req, retry=True)  # a request_route
        except Exception as exc:
            self._stats.router_errors.labels("ack").inc()
            log.debug("router call for ACK failed: %r", exc)
            return  # an ACK is never answered (RFC 3261 §17.2.3)
        if decision.WhichOneof("action") != "relay":
            return
        copy = self._edited_request(ProxyTransaction("", request, Address("UDP", "", 0),
                                                     source, 0.0), decision)  # fmt: skip
        if decision.media_ops and has_sdp(copy):
            # NATMANAGE on an ACK: the answer to an offer the callee made in its 2xx.
            for action, flags in plan_request(decision.media_ops).now:
                try:
                    await self._media.on_request(copy, action, flags, source.remote)
                except MediaFailure as exc:
                    # An ACK cannot be refused (§17.1.1.3); it goes on unchanged.
                    log.debug("media op on ACK failed: %s", exc.reason)
        target = decision.relay.targets[0] if decision.relay.targets else None
        self._sl.forward_request(copy, target)
