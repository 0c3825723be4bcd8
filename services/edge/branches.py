"""Per-transaction proxy state: the response context of RFC 3261 §16 and its branches.

A ProxyTransaction is what Kamailio's tm calls a cell: the server transaction of the
caller's request, the branches sent on, the best final response so far (§16.7 step
6), the timers of each branch (fr_timer, timer C) and what the router asked to be
remembered (context, handlers, flags, accounting marks).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import Request, Response
from sipmesh.sip.stateless import make_cancel
from sipmesh.sip.transaction import Address, TransactionError, TransactionLayer

from .forward import Hop
from .media import MediaState

__all__ = ["Branch", "ProxyTransaction", "best_response", "cancel_branch", "choose_best"]


@dataclass(eq=False)
class Branch:
    index: int
    target: router_pb2.Target | None
    request: Request
    hop: Hop
    dest: Address
    tx_id: str | None = None
    status: int = 0  # final status, 0 while pending
    response: Response | None = None
    provisional: bool = False
    cancel_wanted: bool = False
    cancelled: bool = False
    timer: asyncio.TimerHandle | None = None
    # Media (services/edge/media.py): the Via branch of this branch's own offer
    # (branch_route), the last reply SDP and its rewrite (2xx retransmissions reuse
    # it), and the ACK sent when the edge refused this branch's 2xx.
    via_branch: str = ""
    media_sdp: tuple[bytes, bytes] | None = None
    refused_ack: tuple[bytes, Address] | None = None

    @property
    def done(self) -> bool:
        return self.status >= 200

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(eq=False)
class ProxyTransaction:
    tx_id: str
    request: Request  # as received (after received/rport), never edited
    source: Address
    source_pb: common_pb2.Source
    started_at: float
    context: bytes = b""
    handlers: router_pb2.Handlers = field(default_factory=router_pb2.Handlers)
    acc: router_pb2.AccFlags = field(default_factory=router_pb2.AccFlags)
    flags: int = 0
    authenticated_user: str = ""
    # The request as the router edited it: each branch is copied from this.
    base: Request | None = None
    record_route: bool = False
    record_route_params: str = ""
    fr_timer: float = 30.0
    fr_inv_timer: float = 120.0
    branches: list[Branch] = field(default_factory=list)
    # Serial forking: groups still to try (RFC 3261 §16.6 / t_next_contacts).
    pending_groups: list[list[router_pb2.Target]] = field(default_factory=list)
    final_sent: int = 0
    cancelled: bool = False
    failure_calls: int = 0
    provisional_at: float = 0.0
    finished_at: float = 0.0
    winner: Branch | None = None
    routing: bool = True  # a router call is in flight
    span: Span | None = None  # the transaction's trace span (sipmesh.observe.spans)
    media: MediaState | None = None  # None unless the router asked for media ops
    dialog: bool = False  # an INVITE dialog the edge reports (services/edge/dialogs.py)
    # To tag of the responses this proxy generates itself (§8.2.6.2), one per
    # transaction so that a 487 and a retransmitted 487 agree.
    to_tag: str = field(default_factory=lambda: secrets.token_hex(8))
    # Reply-route calls run one at a time so replies keep their order upstream.
    reply_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def invite(self) -> bool:
        return self.request.method == "INVITE"

    def active(self) -> list[Branch]:
        return [b for b in self.branches if not b.done]

    def stop_timers(self) -> None:
        for branch in self.branches:
            branch.stop_timer()


def _class_rank(status: int) -> tuple[int, int]:
    # §16.7 step 6: 6xx beats everything; otherwise the lowest class wins. Within a
    # class, 401/407 are kept (for the challenge aggregation of step 7) and otherwise
    # the first received stays; Kamailio prefers the lowest code, so do we.
    klass = status // 100
    return (0 if klass == 6 else klass, status)


def choose_best(statuses: list[int]) -> int | None:
    finals = [s for s in statuses if s >= 300]
    if not finals:
        return None
    return min(finals, key=_class_rank)


def best_response(ptx: ProxyTransaction) -> tuple[int, Branch | None]:
    """The best final response over every branch (§16.7 step 6).

    Branches that timed out count as 408 (§16.8); when no branch produced anything
    at all the answer is 408 too. The returned branch holds the response to forward,
    None when the answer has to be generated locally (408, 500).
    """
    best: Branch | None = None
    for branch in ptx.branches:
        if branch.status < 300:
            continue
        if best is None or _class_rank(branch.status) < _class_rank(best.status):
            best = branch
    if best is None:
        return 408, None
    if best.response is None:
        return best.status, None
    if best.status == 503:
        # §16.7 step 6: a 503 is not passed on as such (it would make the caller
        # believe this proxy is unavailable); 500 is generated instead.
        return 500, None
    return best.status, best


def cancel_branch(branch: Branch, layer: TransactionLayer, now: float) -> bool:
    """CANCEL a pending INVITE branch (RFC 3261 §9.1), or arm it for its first 1xx.

    True when the CANCEL was sent now (the branch then waits for its final response,
    normally 487)."""
    if branch.cancelled or branch.response is not None or branch.tx_id is None:
        return False
    if branch.request.method != "INVITE":
        return False  # only INVITE is worth cancelling; the others end by themselves
    if not branch.provisional:
        # §9.1: no CANCEL before a provisional arrived; it is sent when one does.
        branch.cancel_wanted = True
        return False
    branch.cancelled = True
    with contextlib.suppress(TransactionError):
        layer.send_request(make_cancel(branch.request), branch.dest, now)
    return True
