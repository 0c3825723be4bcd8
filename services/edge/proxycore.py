"""The proxy core: carries out the router's decisions over the transaction layer.

Kamailio's tm module in Python, driven by events of sipmesh.sip.transaction:

- every new server transaction is one router call (request_route); retransmissions
  are absorbed by the layer and never reach the router;
- a Reply decision answers through the server transaction (t_reply); a Relay starts
  one client transaction per target (parallel forking, or groups tried in turn for
  serial forking, q-values high first), with Record-Route, header edits, R-URI
  rewrite and pre-loaded routes (RFC 3261 §16.6; forking.py);
- responses: 1xx forwarded (never 100, §16.7 step 5), 2xx forwarded at once, and a
  2xx or 6xx CANCELs the other branches; when every branch ended without 2xx the
  failure handler of the router may add branches (voicemail...), else the best
  response is sent (§16.7 step 6), 401/407 challenges aggregated (step 7);
- fr_timer (no response) and fr_inv_timer (timer C, after a provisional) per branch;
  a timed-out branch counts as 408 and is CANCELled if it had answered (§16.8);
- a CANCEL from the caller is answered 200 and sent on to every pending branch; the
  callee's 487 is relayed as the final response (§16.10, §16.7), a local 487 only
  when no branch is pending or the CANCELled ones never answer (cancels.py);
- the router not answering within edge.router_timeout gives 503 + Retry-After (or
  the configured 5xx), never silence;
- branch_route and reply_route are called only when the router armed them
  (Relay.handlers); media ops are carried out by services/edge/media.py and dialog
  events published by services/edge/dialogs.py; an INVITE the router drops after
  100 Trying is ended silently after timer C (docs/edge.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sipmesh.clients.errors import Unavailable
from sipmesh.clients.interfaces import LocalRouter, RouterClient
from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2, router_pb2
from sipmesh.observe.spans import Spans
from sipmesh.sip import ParseError, Request, Response, parse_message
from sipmesh.sip.stateless import make_response
from sipmesh.sip.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    MalformedMessage,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionError,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailure,
)

from . import forward as fw
from .branches import Branch, ProxyTransaction, best_response
from .callbacks import RouterCallbacks
from .cancels import Cancellation
from .dialogs import DialogEvents
from .flowtoken import FlowTokens
from .forking import Forking
from .media import MediaManager
from .proxymedia import MediaSteps
from .replies import (
    aggregate_challenges,
    has_upstream_via,
    local_reply,
    strip_own_via,
    transaction_event,
)
from .stateless import StatelessForwarder
from .stats import EdgeStats
from .txdriver import TxDriver

__all__ = ["CoreSettings", "ProxyCore"]

log = logging.getLogger("sipmesh.edge.proxy")

_KIND = router_pb2
_MAX_FAILURE_ROUTES = 4  # bound on failure_route -> relay -> failure_route chains
# A retry of a routing call needs at least this much of router_timeout left (s).
_MIN_RETRY_TIME = 0.05


@dataclass(frozen=True, slots=True)
class CoreSettings:
    edge_id: str
    router_timeout: float = 2.0
    router_failure_code: int = 503
    router_retry_after: int = 5
    fr_timer: float = 30.0
    fr_inv_timer: float = 120.0
    max_forwards: int = 70


class ProxyCore(Forking, RouterCallbacks, MediaSteps, Cancellation):
    def __init__(
        self,
        *,
        driver: TxDriver,
        router: RouterClient,
        settings: CoreSettings,
        stats: EdgeStats,
        stateless: StatelessForwarder,
        local_address: Callable[[str, str], tuple[str, int]],
        publish: Callable[[events_pb2.TransactionEvent], None],
        on_final: Callable[[ProxyTransaction, Response], None] | None = None,
        media: MediaManager | None = None,
        dialogs: DialogEvents | None = None,
        wall: Callable[[], float] = time.time,
        tokens: FlowTokens | None = None,
    ) -> None:
        self._driver = driver
        # RFC 5626 flow tokens in Record-Route, and targets naming a flow by token.
        self._tokens = tokens
        self._layer = driver.layer
        self._router = router
        # In one process the router may take the request we parsed (no re-parse).
        self._local_router = router if isinstance(router, LocalRouter) else None
        self._cfg = settings
        self._stats = stats
        self._sl = stateless
        self._local = local_address
        self._publish = publish
        self._on_final = on_final
        self._media = media if media is not None else MediaManager(None)
        self._dialogs = dialogs
        # Transaction events carry wall-clock times (time.time); timers run on the
        # loop's monotonic clock.
        self._wall = wall
        # INVITEs dropped by the router after 100 Trying, ended after timer C.
        self._dropped: dict[str, asyncio.TimerHandle] = {}
        self._loop = asyncio.get_running_loop()
        self.transactions: dict[str, ProxyTransaction] = {}
        self._clients: dict[str, tuple[ProxyTransaction, Branch]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Observability hooks (sipmesh.observe), set by the edge service when enabled.
        self.spans: Spans | None = None
        self.on_decision: Callable[[ProxyTransaction, router_pb2.Decision], None] | None = None

    # -- event dispatch (called by the TxDriver) -----------------------------------

    def on_event(self, event: Event, source: common_pb2.Source | None) -> None:
        if isinstance(event, RequestReceived):
            self._new_request(event, source or common_pb2.Source())
        elif isinstance(event, ResponseReceived):
            entry = self._clients.get(event.tx_id)
            if entry is not None:
                self._branch_response(entry[0], entry[1], event.response)
        elif isinstance(event, CancelReceived):
            self._caller_cancel(event)
        elif isinstance(event, AckReceived):
            self._spawn(self._route_ack(event.request, source or common_pb2.Source()))
        elif isinstance(event, StrayResponse):
            self._sl.forward_response(event.response)
        elif isinstance(event, TransactionTimeout | TransportFailure):
            entry = self._clients.get(event.tx_id)
            if entry is not None:
                status = 408 if isinstance(event, TransactionTimeout) else 503
                self._branch_failed(entry[0], entry[1], status)
        elif isinstance(event, TransactionTerminated):
            self._terminated(event.tx_id)
        elif isinstance(event, MalformedMessage):
            self._stats.err_requests.inc()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- request_route -------------------------------------------------------------

    def _new_request(self, event: RequestReceived, source: common_pb2.Source) -> None:
        request = event.request
        ptx = ProxyTransaction(
            tx_id=event.tx_id,
            request=request,
            source=event.source,
            source_pb=source,
            started_at=source.received_at or self._wall(),
            fr_timer=self._cfg.fr_timer,
            fr_inv_timer=self._cfg.fr_inv_timer,
        )
        self.transactions[event.tx_id] = ptx
        self._stats.active_transactions.inc()
        if request.method == "INVITE":
            # RFC 3261 §16.2: a stateful proxy answers an INVITE with 100 Trying at
            # once, which stops the caller's retransmissions (Kamailio's t_newtran).
            self._send_upstream(ptx, make_response(request, 100))
        spans = self.spans
        if spans is not None and spans.enabled:
            local = source.local
            peer = (ptx.source.host, ptx.source.port)
            ptx.span = spans.transaction(
                request, ptx.source.transport, peer, (local.host, local.port)
            )
            with Spans.current(ptx.span):  # the router call's task inherits the span
                self._spawn(self._route(ptx))
            return
        self._spawn(self._route(ptx))

    async def _call_router(
        self, req: router_pb2.RouteRequest, *, retry: bool = False
    ) -> router_pb2.Decision:
        decision, _ = await self._call_router_with(req, retry=retry, parsed=None)
        return decision

    async def _call_router_with(
        self, req: router_pb2.RouteRequest, *, retry: bool, parsed: Request | None
    ) -> tuple[router_pb2.Decision, Response | None]:
        """One routing call, bounded by edge.router_timeout.

        ``retry``: when the call fails with Unavailable (the router's stream broke
        mid-request, e.g. the instance was killed) and time is left, ask once more;
        the stream client picks another backend. Only for calls without side
        effects that a second attempt could repeat: a request_route decision, and
        the registrar's save behind a REGISTER, which answers the same REGISTER
        again with its bindings unchanged (services/registrar/core.py).
        """
        timeout = self._cfg.router_timeout
        deadline = self._loop.time() + timeout
        try:
            # The deadline bounds the call even when the client ignores its own
            # timeout; a timeout context, not wait_for (which spawns a task per call).
            async with asyncio.timeout_at(deadline):
                return await self._ask_router(req, parsed, timeout)
        except Unavailable:
            left = deadline - self._loop.time()
            if not retry or left <= _MIN_RETRY_TIME:
                raise
        self._stats.router_errors.labels("retried").inc()
        async with asyncio.timeout_at(deadline):
            return await self._ask_router(req, parsed, left)

    async def _ask_router(
        self, req: router_pb2.RouteRequest, parsed: Request | None, timeout: float
    ) -> tuple[router_pb2.Decision, Response | None]:
        """The decision, and its raw reply as an object when the router built it here."""
        local = self._local_router
        if local is not None and parsed is not None:
            return await local.route_parsed(req, parsed, timeout=timeout)
        return await self._router.route(req, timeout=timeout), None

    async def _route(self, ptx: ProxyTransaction) -> None:
        req = router_pb2.RouteRequest(
            kind=_KIND.ROUTE_KIND_REQUEST,
            message=common_pb2.SipMessage(raw=bytes(ptx.request), source=ptx.source_pb),
            transaction_id=ptx.tx_id,
        )
        try:
            decision, reply = await self._call_router_with(req, retry=True, parsed=ptx.request)
        except Exception as exc:
            ptx.routing = False
            self._router_failed(ptx, exc)
            self._driver.pump()
            return
        ptx.routing = False
        if ptx.final_sent:
            return  # CANCELled (487 sent) while the router was deciding
        self._execute(ptx, decision, reply)
        self._driver.pump()

    def _router_failed(self, ptx: ProxyTransaction, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self._stats.router_errors.labels(kind).inc()
        log.debug("router call failed for %s: %r", ptx.tx_id, exc)
        if ptx.final_sent:
            return
        code = self._cfg.router_failure_code
        headers: list[tuple[str, str]] = []
        retry = getattr(exc, "retry_after", None) or self._cfg.router_retry_after
        if code == 503 and retry:
            headers.append(("Retry-After", str(int(retry))))
        self._final_local(ptx, code, None, headers)

    def _remember(self, ptx: ProxyTransaction, decision: router_pb2.Decision) -> None:
        if decision.context:
            ptx.context = decision.context
        if decision.HasField("acc"):
            ptx.acc = decision.acc
        ptx.flags |= decision.flags
        if decision.authenticated_user:
            ptx.authenticated_user = decision.authenticated_user
        if self.on_decision is not None:
            self.on_decision(ptx, decision)

    def _edited_request(self, ptx: ProxyTransaction, decision: router_pb2.Decision) -> Request:
        return fw.edited_copy(ptx.base if ptx.base is not None else ptx.request, decision)

    def _execute(
        self,
        ptx: ProxyTransaction,
        decision: router_pb2.Decision,
        reply: Response | None = None,
    ) -> None:
        self._remember(ptx, decision)
        action = decision.WhichOneof("action")
        if action == "reply":
            self._reply(ptx, decision.reply, reply)
        elif action == "relay":
            ptx.base = self._edited_request(ptx, decision)
            if decision.media_ops:
                ptx.routing = True  # nothing may finish the transaction meanwhile
                self._spawn(self._media_then_relay(ptx, decision))
                return
            if ptx.request.method == "BYE" and self._media.known(ptx.request.call_id):
                # A call this edge set up on a relay ends, asked for or not.
                self._media.delete_later(ptx.request.call_id)
            self._relay(ptx, decision.relay)
        else:
            # drop (or proceed, which for request_route is the end of the script:
            # Kamailio drops what the script did not handle).
            self._stats.dropped("router")
            if ptx.invite:
                self._linger(ptx)
            self._forget(ptx)

    def _reply(
        self, ptx: ProxyTransaction, reply: router_pb2.Reply, message: Response | None = None
    ) -> None:
        """``message``: ``reply.raw`` as an object (in-process hand-over, not re-parsed)."""
        if message is not None and reply.raw:
            self._send_final(ptx, message.copy())
            return
        if reply.raw:
            try:
                parsed = parse_message(reply.raw, lazy=True)
            except ParseError as exc:
                log.warning("router sent an unparseable raw reply: %s", exc)
                self._final_local(ptx, 500, None)
                return
            if isinstance(parsed, Response):
                self._send_final(ptx, parsed)
                return
        headers = [(h.name, h.value) for h in reply.headers]
        self._final_local(ptx, reply.code or 500, reply.reason or None, headers, reply.body)

    # -- responses on branches ---------------------------------------------------------

    def _branch_response(self, ptx: ProxyTransaction, branch: Branch, response: Response) -> None:
        self._stats.reply_received(response.status)
        if branch.refused_ack is not None:
            data, dest = branch.refused_ack
            if data and 200 <= response.status < 300:
                self._sl.send(data, dest)  # the 2xx again: our ACK was lost
            return
        if response.status > 100 and (ptx.handlers.reply or self._wants_media(ptx)):
            # Router call and/or relay call: serialised per transaction (reply_lock),
            # so replies keep their order upstream.
            with Spans.current(ptx.span):
                self._spawn(self._reply_route(ptx, branch, response))
        else:
            self._handle_response(ptx, branch, response)

    def _handle_response(self, ptx: ProxyTransaction, branch: Branch, response: Response) -> None:
        status = response.status
        if not has_upstream_via(response):
            self._meant_for_us(ptx, branch, response)
            return
        if status < 200:
            if branch.done:
                return
            branch.provisional = True
            if branch.cancel_wanted or branch.cancelled:
                # §9.1: the CANCEL held back until this first provisional goes now; a
                # CANCELled branch keeps its CANCEL's timer (no timer C restart).
                self._cancel_branch(ptx, branch)
                return
            if ptx.invite:
                # Timer C (fr_inv_timer) runs from the provisional on, restarted by
                # each one (RFC 3261 §16.7 step 2; tm's restart_fr_on_each_reply).
                branch.stop_timer()
                branch.timer = self._loop.call_later(
                    ptx.fr_inv_timer, self._branch_timeout, ptx, branch
                )
            if status == 100 or ptx.final_sent or ptx.cancelled:
                return
            if not ptx.provisional_at:
                ptx.provisional_at = self._wall()
            if self._send_upstream(ptx, strip_own_via(response)) and ptx.dialog:
                assert self._dialogs is not None
                self._dialogs.provisional(ptx, response)
            return
        branch.stop_timer()
        first_final = not branch.done
        if first_final:
            branch.status = status
            branch.response = response
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx is forwarded at once, even after another 2xx.
            if ptx.invite or not ptx.final_sent:
                if not ptx.final_sent:
                    ptx.winner = branch
                self._send_final(ptx, strip_own_via(response))
            self._cancel_others(ptx, branch)
            return
        if not first_final:
            return
        if status >= 600:
            self._cancel_others(ptx, branch)
        self._check_done(ptx)

    def _meant_for_us(self, ptx: ProxyTransaction, branch: Branch, response: Response) -> None:
        """§16.7 step 3: once our Via is removed none is left, so the response was meant
        for this element and MUST NOT be forwarded (a callee that answered the INVITE
        with the Via of our CANCEL, say). A final one still ends its branch: the
        caller gets a response of ours with that status (a 2xx, which cannot reach
        the caller's transaction without its Via, as 502)."""
        log.debug("response without the caller's Via not forwarded: %s", response.status)
        if response.status < 200:
            return
        self._branch_failed(ptx, branch, response.status if response.status >= 300 else 502)

    def _branch_failed(self, ptx: ProxyTransaction, branch: Branch, status: int) -> None:
        if branch.done:
            return
        branch.stop_timer()
        branch.status = status
        self._check_done(ptx)

    def _branch_timeout(self, ptx: ProxyTransaction, branch: Branch) -> None:
        branch.timer = None
        if branch.done:
            return
        # §16.8: timer C fired; a branch that answered provisionally is CANCELled,
        # one that never answered stops being retransmitted (§9.1: no CANCEL then).
        branch.status = 408
        if ptx.invite and branch.provisional:
            self._cancel_branch(ptx, branch)
        elif branch.tx_id is not None:
            self._driver.layer.stop_retransmissions(branch.tx_id)
        self._check_done(ptx)
        self._driver.pump()

    def _check_done(self, ptx: ProxyTransaction) -> None:
        if ptx.final_sent or ptx.routing or ptx.active():
            return
        if ptx.pending_groups and not ptx.cancelled:
            best = max((b.status for b in ptx.branches), default=0)
            if best < 600:
                group: list[router_pb2.Target | None] = list(ptx.pending_groups.pop(0))
                self._start_group(ptx, group)
                return
        if ptx.handlers.failure and not ptx.cancelled and ptx.failure_calls < _MAX_FAILURE_ROUTES:
            ptx.failure_calls += 1
            ptx.routing = True
            with Spans.current(ptx.span):
                self._spawn(self._failure_route(ptx))
            return
        self._send_best(ptx)

    def _send_best(self, ptx: ProxyTransaction) -> None:
        status, branch = best_response(ptx)
        if branch is not None and branch.response is not None:
            out = strip_own_via(branch.response)
            aggregate_challenges(out, ptx.branches)
            ptx.winner = branch
            self._send_final(ptx, out)
        elif ptx.cancelled:
            # The caller CANCELled and no branch gave a response to relay (they timed
            # out or failed): 487, not 408, as tm relays a faked reply of a
            # cancelled transaction (t_reply.c relay_reply).
            self._final_local(ptx, 487, None)
        else:
            self._final_local(ptx, status, None)

    # -- ACK for 2xx and stateless relay -------------------------------------------------

    # -- sending upstream ----------------------------------------------------------------

    def _send_upstream(self, ptx: ProxyTransaction, response: Response) -> bool:
        try:
            self._layer.send_response(ptx.tx_id, response, self._loop.time())
        except TransactionError as exc:
            log.debug("response not sent on %s: %s", ptx.tx_id, exc)
            return False
        if response.status >= 200:
            self._stats.fwd_replies.inc()
        return True

    def _final_local(
        self,
        ptx: ProxyTransaction,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self._stats.replied(status)
        self._send_final(ptx, local_reply(ptx, status, reason, headers or [], body))

    def _send_final(self, ptx: ProxyTransaction, response: Response) -> None:
        already = ptx.final_sent
        if not self._send_upstream(ptx, response) or already:
            return
        ptx.final_sent = response.status
        ptx.finished_at = self._wall()
        ptx.stop_timers() if response.status >= 300 else None
        self._stats.transaction_finished(response.status)
        self._stats.active_transactions.dec()
        Spans.end_transaction(ptx.span, response.status)
        try:
            self._publish(transaction_event(ptx, response, self._cfg.edge_id))
        except Exception:  # events are fire and forget; never break a call for them
            log.debug("transaction event not published", exc_info=True)
        if response.status >= 300 and ptx.media is not None:
            self._media_cleanup(ptx)  # failed (busy, 487, timeout...): free the relay
        if self._dialogs is not None:
            self._dialogs.final(ptx, response)
        if self._on_final is not None:
            self._on_final(ptx, response)
        if not ptx.invite and not ptx.branches and not ptx.routing:
            # A non-INVITE answered here (the registrar's 200 OK, a 4xx) has nothing
            # left to relay: its server transaction alone absorbs retransmissions for
            # timer J (64*T1 on UDP, RFC 3261 §17.2.2), so the proxy's state — the
            # parsed request, decision and span — is released now, not 32 s later.
            self.transactions.pop(ptx.tx_id, None)

    # -- cleanup -----------------------------------------------------------------------

    def _forget(self, ptx: ProxyTransaction) -> None:
        if self.transactions.pop(ptx.tx_id, None) is not None and not ptx.final_sent:
            self._stats.active_transactions.dec()
            Spans.end_transaction(ptx.span, 0)
        ptx.stop_timers()

    def _terminated(self, tx_id: str) -> None:
        entry = self._clients.pop(tx_id, None)
        if entry is not None:
            return
        dropped = self._dropped.pop(tx_id, None)
        if dropped is not None:
            dropped.cancel()
        ptx = self.transactions.get(tx_id)
        if ptx is not None:
            ptx.stop_timers()
            for branch in ptx.branches:
                if branch.tx_id is not None and self._layer.state(branch.tx_id) is None:
                    self._clients.pop(branch.tx_id, None)
            self._forget(ptx)

    async def close(self) -> None:
        for handle in self._dropped.values():
            handle.cancel()
        self._dropped.clear()
        for task in list(self._tasks):
            task.cancel()
        await self._media.close()
        for ptx in self.transactions.values():
            ptx.stop_timers()
