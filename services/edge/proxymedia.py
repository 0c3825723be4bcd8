"""The proxy core's media steps: NATMANAGE ops carried out as the transaction runs.

A mixin of ProxyCore (its methods run on the core, ``self: CoreHost``), kept apart so
that the plain relay path of proxycore.py stays short and cheap: none of this runs
unless the router put media ops in a decision (``ProxyTransaction.media`` is None
otherwise). What each op does: services/edge/media.py.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import Request, Response
from sipmesh.sip.transaction import Address, TransactionError

from . import forward as fw
from .branches import Branch, ProxyTransaction
from .media import MediaFailure, MediaState, ReplyOp, has_sdp, plan_request
from .teardown import callee_ack_and_bye

if TYPE_CHECKING:
    from .corehost import CoreHost

__all__ = ["MediaSteps"]

log = logging.getLogger("sipmesh.edge.proxy")


class MediaSteps:
    async def _media_then_relay(
        self: CoreHost, ptx: ProxyTransaction, decision: router_pb2.Decision
    ) -> None:
        """Offer (or answer/delete) on the request, then relay it."""
        assert ptx.base is not None
        try:
            await self._media_request(ptx, ptx.base, decision, -1, "")
        except MediaFailure as exc:
            ptx.routing = False
            self._media_failed(ptx, exc)
            self._driver.pump()
            return
        ptx.routing = False
        if ptx.final_sent:
            self._media_cleanup(ptx)  # CANCELled while the relay was asked
            self._driver.pump()
            return
        self._relay(ptx, decision.relay)
        self._driver.pump()

    async def _media_request(
        self: CoreHost,
        ptx: ProxyTransaction,
        request: Request,
        decision: router_pb2.Decision,
        index: int,
        via_branch: str,
    ) -> None:
        """The ops of a request/branch_route decision: the "now" ones on ``request``,
        the others armed on the transaction (replies, failure)."""
        plan = plan_request(decision.media_ops)
        state = ptx.media
        if state is None:
            state = ptx.media = MediaState()
        if plan.reply is not None:
            if index < 0:
                state.reply = plan.reply
            else:
                state.branches[index] = (plan.reply, via_branch)
        if plan.delete_on_failure and ptx.invite and not ptx.request.to.tag:
            state.delete_on_failure = (
                True  # an initial INVITE: a re-INVITE's failure keeps the call
            )
        for action, flags in plan.now:
            if await self._media.on_request(
                request, action, flags, ptx.source_pb.remote, via_branch
            ):
                state.offered = True

    def _media_failed(self: CoreHost, ptx: ProxyTransaction, exc: MediaFailure) -> None:
        log.debug("media op failed for %s: %s", ptx.tx_id, exc.reason)
        self._media_cleanup(ptx)
        if not ptx.final_sent:
            self._final_local(ptx, exc.status, exc.reason, exc.headers())

    def _media_cleanup(self: CoreHost, ptx: ProxyTransaction) -> None:
        """Delete what this transaction made on the relay (nothing half-made stays)."""
        state = ptx.media
        if state is None or state.deleted or not (state.offered or state.delete_on_failure):
            return
        if ptx.request.to.tag and not state.delete_on_failure:
            return  # a failed re-INVITE leaves the call's media as it was
        state.deleted = True
        self._media.delete_later(ptx.request.call_id)

    @staticmethod
    def _wants_media(ptx: ProxyTransaction) -> bool:
        state = ptx.media
        return state is not None and (state.reply is not None or bool(state.branches))

    async def _reply_media(
        self: CoreHost,
        ptx: ProxyTransaction,
        branch: Branch,
        response: Response,
        op: ReplyOp,
        via: str,
    ) -> bool:
        """Answer (or late offer) on an 18x/2xx's SDP; False when the reply must not
        go on (a provisional is then not relayed, a 2xx refused: _refuse_2xx)."""
        cached = branch.media_sdp
        if cached is not None and cached[0] == response.body:
            response.body = cached[1]  # a retransmitted 2xx: same SDP, same rewrite
            return True
        original = response.body
        hop = branch.hop
        source = common_pb2.Address(
            transport=fw.transport_enum(hop.transport), host=hop.host, port=hop.port
        )
        try:
            await self._media.on_reply(ptx.request, response, op, source, via)
        except MediaFailure as exc:
            if response.status >= 200 and not branch.done:
                self._refuse_2xx(ptx, branch, response, exc)
            return False
        branch.media_sdp = (original, response.body)
        if ptx.media is not None and (op.kind == "offer" or not has_sdp(ptx.request)):
            ptx.media.offered = True
        return True

    def _refuse_2xx(
        self: CoreHost,
        ptx: ProxyTransaction,
        branch: Branch,
        response: Response,
        exc: MediaFailure,
    ) -> None:
        """The callee answered but the relay failed: ACK and BYE the callee, the
        caller gets the failure (services/edge/teardown.py), the session goes."""
        log.debug("2xx of %s refused: %s", ptx.tx_id, exc.reason)
        branch.stop_timer()
        branch.status = exc.status
        ack, bye = callee_ack_and_bye(branch.request, response, self._sl.is_myself)
        dest = self._sl.prepare(ack, None, fw.stateless_branch)
        if dest is not None:
            branch.refused_ack = (bytes(ack), dest)
            self._sl.send(*branch.refused_ack)
        bye_dest = self._sl.prepare(bye, None, lambda _: fw.new_branch())
        if bye_dest is not None:
            try:
                self._layer.send_request(bye, bye_dest, self._loop.time())
                self._stats.uac_started += 1  # tmx:UAC_transactions: our own BYE
            except TransactionError as err:
                log.debug("BYE to the refused callee not sent: %s", err)
        if branch.refused_ack is None:
            branch.refused_ack = (b"", Address("UDP", "", 0))
        self._media_cleanup(ptx)
        if ptx.media is not None and not ptx.media.deleted:
            ptx.media.deleted = True
            self._media.delete_later(ptx.request.call_id)
        if not ptx.final_sent and not ptx.active():
            self._final_local(ptx, exc.status, exc.reason, exc.headers())
            self._cancel_others(ptx, branch)
