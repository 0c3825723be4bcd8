"""NATMANAGE at the edge: the router's MediaOps carried out against the media relay.

The router only says *what* (``Decision.media_ops``, rtpengine_manage/offer/answer/
delete with rtpengine's flags); the edge does it as the transaction progresses,
because only the edge holds the SDP bodies at the right moments:

- a MANAGE (or OFFER) op in a request_route/branch_route decision rewrites the SDP
  offer of the request before it is relayed (RFC 3264 offer in the INVITE/UPDATE);
  an ACK with SDP is the answer to an offer made in a 2xx (late offer, RFC 3261
  §13.2.1); a BYE or CANCEL deletes the session;
- the same op stays armed for the transaction: each 18x/2xx reply with SDP gets its
  answer rewritten (or, when the request had no SDP, its offer), and a failed
  initial INVITE (final >= 300 upstream: busy, CANCEL's 487, timeout) deletes the
  session, so nothing half-made stays allocated on the relay;
- ops in a reply_route decision act on that reply; in a failure_route decision,
  MANAGE/DELETE delete (rtpengine_manage in failure_route).

The relay of a call is chosen by the client (consistent hash of the Call-ID in the
gRPC client, the local service in one process); ``MediaOp.relay`` is not honoured.
A relay error fails the call cleanly: 503 + Retry-After when the relay is
unreachable, overloaded or out of ports; 500 for anything else (docs/edge.md).

Session keys follow rtpengine: the offerer's tag is ``from_tag``, the answerer's
``to_tag``; a per-branch offer (branch_route) carries the branch's Via branch so the
relay keeps forked early media apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter

from sipmesh.clients.errors import (
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from sipmesh.clients.interfaces import MediaRelayClient
from sipmesh.gen.sipmesh.v1 import common_pb2, media_relay_pb2, router_pb2
from sipmesh.sip import Message, ParseError, Request, Response

__all__ = [
    "MediaFailure",
    "MediaManager",
    "MediaState",
    "ReplyOp",
    "has_sdp",
    "plan_failure",
    "plan_reply",
    "plan_request",
]

log = logging.getLogger("sipmesh.edge.media")

MediaClientSource = Callable[[], Awaitable[MediaRelayClient]]
_Op = router_pb2.MediaOp
# Methods whose SDP is an offer (RFC 3264 over RFC 3261 §13 / RFC 3311 UPDATE).
_OFFER_METHODS = frozenset({"INVITE", "UPDATE", "PRACK"})
_MAX_CALLS = 100_000
_R = TypeVar("_R")


class MediaFailure(Exception):
    """The relay could not do an operation; the call fails with ``status``."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    def headers(self) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after))] if self.retry_after else []


def has_sdp(message: Message) -> bool:
    """A body of type application/sdp (RFC 4566 §5); multipart bodies are left alone."""
    if not message.body:
        return False
    ctype = message.get("Content-Type")
    return ctype is not None and ctype.split(";", 1)[0].strip().lower() == "application/sdp"


@dataclass(frozen=True, slots=True)
class ReplyOp:
    """What to do with the SDP of a reply: "manage" (answer, or offer when the request
    had none), "offer" or "answer"."""

    kind: str
    flags: tuple[str, ...]


@dataclass(slots=True)
class MediaState:
    """The media side of one proxy transaction (None on ProxyTransaction when unused)."""

    reply: ReplyOp | None = None
    delete_on_failure: bool = False
    offered: bool = False  # this transaction created or updated a relay session
    deleted: bool = False
    # Per-branch ops (branch_route): branch index -> (reply op, Via branch).
    branches: dict[int, tuple[ReplyOp | None, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """The ops of a request_route/branch_route decision, split by when they act."""

    now: tuple[tuple[str, tuple[str, ...]], ...]  # ("offer"|"answer"|"delete"|"manage", flags)
    reply: ReplyOp | None
    delete_on_failure: bool


def plan_request(ops: Iterable[router_pb2.MediaOp]) -> RequestPlan:
    now: list[tuple[str, tuple[str, ...]]] = []
    reply: ReplyOp | None = None
    on_failure = False
    for op in ops:
        flags = tuple(op.flags)
        if op.kind == _Op.KIND_MANAGE:
            now.append(("manage", flags))
            reply = ReplyOp("manage", flags)
            on_failure = True
        elif op.kind == _Op.KIND_OFFER:
            if op.when == _Op.WHEN_REPLY:
                reply = ReplyOp("offer", flags)
            else:
                now.append(("offer", flags))
        elif op.kind == _Op.KIND_ANSWER:
            if op.when == _Op.WHEN_REQUEST:
                now.append(("answer", flags))
            else:
                reply = ReplyOp("answer", flags)
        elif op.kind == _Op.KIND_DELETE:
            if op.when == _Op.WHEN_FAILURE:
                on_failure = True
            else:
                now.append(("delete", flags))
    return RequestPlan(tuple(now), reply, on_failure)


def plan_reply(ops: Iterable[router_pb2.MediaOp]) -> tuple[ReplyOp | None, bool]:
    """(op on this reply, delete now) of a reply_route decision."""
    reply: ReplyOp | None = None
    delete = False
    for op in ops:
        if op.kind == _Op.KIND_DELETE:
            delete = True
        elif op.kind in (_Op.KIND_MANAGE, _Op.KIND_OFFER, _Op.KIND_ANSWER):
            kind = {_Op.KIND_MANAGE: "manage", _Op.KIND_OFFER: "offer"}.get(op.kind, "answer")
            reply = ReplyOp(kind, tuple(op.flags))
    return reply, delete


def plan_failure(ops: Iterable[router_pb2.MediaOp]) -> bool:
    """True when a failure_route decision deletes the session."""
    return any(op.kind in (_Op.KIND_MANAGE, _Op.KIND_DELETE) for op in ops)


def _tag(message: Message, which: str) -> str:
    try:
        addr = message.from_ if which == "from" else message.to
    except ParseError:
        return ""
    return addr.tag or ""


class MediaManager:
    """Offer/answer/delete against the relay of each call, with the edge's errors."""

    def __init__(
        self,
        client: MediaClientSource | None,
        *,
        timeout: float = 2.0,
        metrics: CollectorRegistry | None = None,
        max_calls: int = _MAX_CALLS,
    ) -> None:
        self._source = client
        self._client: MediaRelayClient | None = None
        self._timeout = timeout
        self._max_calls = max_calls
        # Calls this edge set up on a relay (Call-ID -> None), so a BYE crossing this
        # edge deletes the session even when the router asked for nothing. Bounded:
        # the relay's media timeout reclaims what falls out.
        self._calls: OrderedDict[str, None] = OrderedDict()
        # Calls this edge deleted lately: a BYE asked to delete twice (the local
        # table and the router's MANAGE) makes one relay call. An offer clears it.
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ops = Counter(
            "sipmesh_edge_media_ops",
            "Media relay operations run by the edge, by operation and outcome",
            ["op", "outcome"],
            registry=metrics if metrics is not None else CollectorRegistry(),
        )

    async def client(self) -> MediaRelayClient:
        if self._client is None:
            if self._source is None:
                raise MediaFailure(503, "No media relay configured", 5)
            try:
                self._client = await self._source()
            except Exception as exc:
                log.warning("media relay client unavailable: %s", exc)
                raise MediaFailure(503, "Media relay unavailable", 5) from None
        return self._client

    def known(self, call_id: str) -> bool:
        return call_id in self._calls

    # -- operations --------------------------------------------------------------------

    async def offer(
        self,
        message: Message,
        key: media_relay_pb2.MediaSessionKey,
        flags: Iterable[str],
        source: common_pb2.Address,
    ) -> None:
        """Rewrite ``message``'s SDP offer in place (relay addresses and ports)."""
        client = await self.client()
        request = media_relay_pb2.OfferRequest(
            key=key, sdp=message.body, flags=list(flags), source=source
        )
        reply = await self._call("offer", client.offer(request, timeout=self._timeout))
        message.body = reply.sdp
        self._remember(key.call_id)

    async def answer(
        self,
        message: Message,
        key: media_relay_pb2.MediaSessionKey,
        flags: Iterable[str],
        source: common_pb2.Address,
    ) -> None:
        """Rewrite ``message``'s SDP answer in place."""
        client = await self.client()
        request = media_relay_pb2.AnswerRequest(
            key=key, sdp=message.body, flags=list(flags), source=source
        )
        reply = await self._call("answer", client.answer(request, timeout=self._timeout))
        message.body = reply.sdp

    async def delete(self, call_id: str, via_branch: str = "") -> bool:
        """Delete the call's session (or one fork); False when there was none."""
        self._calls.pop(call_id, None)
        if not via_branch:
            if call_id in self._gone:
                return False
            self._gone[call_id] = None
            if len(self._gone) > 4096:
                self._gone.popitem(last=False)
        try:
            client = await self.client()
            key = media_relay_pb2.MediaSessionKey(call_id=call_id, via_branch=via_branch)
            request = media_relay_pb2.DeleteRequest(key=key)
            await self._call("delete", client.delete(request, timeout=self._timeout))
        except MediaFailure as exc:
            if exc.status == 404:
                return False
            log.debug("media delete of %s failed: %s", call_id, exc.reason)
            return False
        return True

    def delete_later(self, call_id: str, via_branch: str = "") -> None:
        """Fire-and-forget delete (BYE, failure): never delays the signalling."""
        task = asyncio.get_running_loop().create_task(self._quiet_delete(call_id, via_branch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_delete(self, call_id: str, via_branch: str) -> None:
        await self.delete(call_id, via_branch)

    async def close(self) -> None:
        tasks = list(self._tasks)
        if tasks:
            # Deletes in flight are worth finishing (they free relay ports).
            await asyncio.wait(tasks, timeout=self._timeout)
        for task in tasks:
            task.cancel()

    # -- message-level helpers -----------------------------------------------------------

    async def on_request(
        self,
        request: Request,
        action: str,
        flags: tuple[str, ...],
        source: common_pb2.Address,
        via_branch: str = "",
    ) -> bool:
        """Run one "now" op of a request decision; True when a session was offered."""
        method = request.method
        call_id = request.get("Call-ID") or ""
        if action == "delete" or (action == "manage" and method in ("BYE", "CANCEL")):
            if call_id:
                self.delete_later(call_id, via_branch)
            return False
        if not has_sdp(request):
            return False
        if method == "ACK" or action == "answer":
            # The answer to an offer made in a 2xx (late offer): the offerer is the
            # callee, whose tag is the ACK's To tag (RFC 3261 §13.2.1).
            key = media_relay_pb2.MediaSessionKey(
                call_id=call_id,
                from_tag=_tag(request, "to"),
                to_tag=_tag(request, "from"),
                via_branch=via_branch,
            )
            await self.answer(request, key, flags, source)
            return False
        if action == "manage" and method not in _OFFER_METHODS:
            return False
        key = media_relay_pb2.MediaSessionKey(
            call_id=call_id,
            from_tag=_tag(request, "from"),
            to_tag=_tag(request, "to"),
            via_branch=via_branch,
        )
        await self.offer(request, key, flags, source)
        return True

    async def on_reply(
        self,
        request: Request,
        response: Response,
        op: ReplyOp,
        source: common_pb2.Address,
        via_branch: str = "",
    ) -> bool:
        """Rewrite the SDP of an 18x/2xx reply; True when something was done."""
        if not (180 <= response.status < 300) or not has_sdp(response):
            return False
        call_id = request.get("Call-ID") or ""
        caller_tag, callee_tag = _tag(request, "from"), _tag(response, "to")
        late = op.kind == "offer" or (op.kind == "manage" and not has_sdp(request))
        if late:
            # The callee offers in its reply (the request had no SDP): it is the offerer.
            key = media_relay_pb2.MediaSessionKey(
                call_id=call_id, from_tag=callee_tag, to_tag=caller_tag, via_branch=via_branch
            )
            await self.offer(response, key, op.flags, source)
        else:
            key = media_relay_pb2.MediaSessionKey(
                call_id=call_id, from_tag=caller_tag, to_tag=callee_tag, via_branch=via_branch
            )
            await self.answer(response, key, op.flags, source)
        return True

    # -- internals -------------------------------------------------------------------------

    def _remember(self, call_id: str) -> None:
        if not call_id:
            return
        self._gone.pop(call_id, None)
        self._calls[call_id] = None
        self._calls.move_to_end(call_id)
        while len(self._calls) > self._max_calls:
            self._calls.popitem(last=False)

    async def _call(self, op: str, call: Awaitable[_R]) -> _R:
        try:
            async with asyncio.timeout(self._timeout):
                result = await call
        except NotFound as exc:
            self.ops.labels(op, "not-found").inc()
            raise MediaFailure(404, str(exc)) from None
        except (Unavailable, DeadlineExceeded, TimeoutError, ResourceExhausted) as exc:
            # The relay is down, slow or full: the caller may try again (RFC 3261
            # §21.5.4), possibly reaching another relay or edge.
            self.ops.labels(op, "unavailable").inc()
            log.debug("media %s failed: %r", op, exc)
            retry = getattr(exc, "retry_after", None) or 5
            raise MediaFailure(503, "Media relay unavailable", int(retry)) from None
        except ServiceError as exc:
            self.ops.labels(op, "error").inc()
            log.debug("media %s refused: %r", op, exc)
            raise MediaFailure(500, "Media relay error") from None
        self.ops.labels(op, "ok").inc()
        return result
