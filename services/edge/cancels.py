"""How an INVITE transaction is called off: the caller's CANCEL (RFC 3261 §9.2,
§16.10) carried to the branches, branches CANCELled by the proxy itself (a 2xx or
6xx elsewhere, timer C), and an INVITE the router dropped after 100 Trying.

A mixin of ProxyCore (its methods run on the core, ``self: CoreHost``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipmesh.sip.stateless import make_response
from sipmesh.sip.transaction import CancelReceived, TransactionError

from .branches import Branch, ProxyTransaction, cancel_branch

if TYPE_CHECKING:
    from .corehost import CoreHost

__all__ = ["Cancellation"]


class Cancellation:
    def _linger(self: CoreHost, ptx: ProxyTransaction) -> None:
        """An INVITE dropped after our 100 Trying (§16.2) gets no final response, as
        Kamailio's drop after t_newtran; its server transaction would otherwise stay
        in Proceeding for ever (RFC 3261 §17.2.1 has no timer there). It keeps
        absorbing retransmissions until timer C (fr_inv_timer) and then ends
        silently; a CANCEL meanwhile ends it with 487."""
        handle = self._loop.call_later(ptx.fr_inv_timer, self._end_dropped, ptx.tx_id)
        self._dropped[ptx.tx_id] = handle

    def _end_dropped(self: CoreHost, tx_id: str) -> None:
        self._dropped.pop(tx_id, None)
        # §17.2.4's way out of Proceeding without sending anything.
        if self._layer.report_transport_error(tx_id, self._loop.time()):
            self._driver.pump()

    def _cancel_dropped(self: CoreHost, tx_id: str) -> None:
        handle = self._dropped.pop(tx_id)
        handle.cancel()
        request = self._layer.request_of(tx_id)
        if request is None:
            return
        try:
            self._layer.send_response(tx_id, make_response(request, 487), self._loop.time())
        except TransactionError:
            pass

    def _caller_cancel(self: CoreHost, event: CancelReceived) -> None:
        """RFC 3261 §16.10: the CANCEL is answered 200 at once and sent on to every
        pending branch (§9.1: a branch without a provisional gets it when one
        arrives). The INVITE is not answered here: the callee's 487 comes back like
        any final response and the best one is relayed (§16.7), as Kamailio's tm
        does; a 2xx racing the CANCEL is relayed too (§16.7 step 5)."""
        ptx = self.transactions.get(event.invite_tx_id) if event.invite_tx_id else None
        dropped = event.invite_tx_id in self._dropped if event.invite_tx_id else False
        status = 200 if ptx is not None or dropped else 481
        try:
            self._layer.send_response(
                event.cancel_tx_id, make_response(event.request, status), self._loop.time()
            )
        except TransactionError:
            pass
        if dropped:
            self._cancel_dropped(event.invite_tx_id or "")
        if ptx is None:
            return
        ptx.cancelled = True
        pending = ptx.active()
        for branch in pending:
            self._cancel_branch(ptx, branch)
        if not ptx.final_sent and not pending:
            # Nothing downstream to answer: the router (a branch_route, a media op, a
            # failure_route) is still deciding. §9.2 / §16.10: the INVITE ends with
            # 487 here; the pending call sees final_sent and sends nothing.
            self._final_local(ptx, 487, None)

    def _cancel_others(self: CoreHost, ptx: ProxyTransaction, winner: Branch) -> None:
        for branch in ptx.branches:
            if branch is not winner:
                self._cancel_branch(ptx, branch)

    def _cancel_branch(self: CoreHost, ptx: ProxyTransaction, branch: Branch) -> None:
        """CANCEL ``branch`` (or arm it for its first provisional, §9.1). A branch
        CANCELled now waits for its final response for fr_timer, not for the rest of
        timer C: §9.1 lets the client give the INVITE up 64*T1 after its CANCEL. It
        then counts as timed out, and a cancelled transaction left with nothing to
        relay answers 487 (proxycore.py _send_best)."""
        if cancel_branch(branch, self._layer, self._loop.time()) and not branch.done:
            branch.stop_timer()
            branch.timer = self._loop.call_later(ptx.fr_timer, self._branch_timeout, ptx, branch)
