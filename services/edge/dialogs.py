"""Dialog events (events.proto DialogEvent) for the INVITE dialogs the edge proxies.

What Kamailio's dialog module reports to acc (CDRs) and pua_dialoginfo (RFC 4235's
dialog package), from what a Record-Routing proxy sees:

- ``start`` when an initial INVITE (no To tag) is relayed with Record-Route
  (RFC 4235 "trying"); an INVITE relayed without Record-Route forms no dialog that
  passes this edge again, so it is not tracked;
- ``early`` on the first provisional with a To tag relayed upstream (RFC 3261
  §12.1: an early dialog);
- ``answer`` on the first 2xx relayed upstream (confirmed);
- ``end`` when the INVITE fails (reason ``cancel`` after the caller's CANCEL, else
  ``failure`` with the status), or when a BYE of the call gets its final response
  (reason ``bye caller`` or ``bye callee``, by who sent it, or ``bye`` for a call
  this instance did not set up; any answer but 401/407 ends the dialog, RFC 3261
  §15.1.2).

Subjects ``sipmesh.dialog.<start|early|answer|end>``; the Envelope id is unique per
event (accounting de-duplicates on it). Publishing is fire and forget. Calls are
kept per Call-ID in a bounded table (the oldest go first), so a BYE crossing this
edge names the call's parties; a BYE for a call this edge does not know (another
instance relayed the INVITE) still ends it by Call-ID.

The same transitions feed Kamailio's dialog statistics (:class:`DialogCounts`, plain
integers read at scrape time by services/edge/stats.py): ``early_dialogs`` and
``active_dialogs`` (confirmed, not yet ended) now, ``processed_dialogs`` (answered),
``failed_dialogs`` (non-2xx final, CANCEL included) and ``expired_dialogs`` (no BYE
seen here within ``dialog_timeout``, Kamailio's default_timeout, or pushed out of the
bounded table) since start. A call whose BYE crosses another edge stays active here
until it expires: the counts are this edge's view, summed for the cluster by
``sipmesh ctl stats``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.trace import Span

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.sip import ParseError, Request, Response

from .branches import ProxyTransaction

__all__ = ["DialogCounts", "DialogEvents"]

_State = events_pb2.DialogEvent
_SUBJECTS = {
    _State.STATE_START: "sipmesh.dialog.start",
    _State.STATE_EARLY: "sipmesh.dialog.early",
    _State.STATE_ANSWER: "sipmesh.dialog.answer",
    _State.STATE_END: "sipmesh.dialog.end",
}
_MAX_DIALOGS = 100_000
_DIALOG_TIMEOUT = 43200.0  # Kamailio dialog default_timeout (12 h)

#: Publishes an event; the span (the INVITE's or BYE's transaction, None when tracing
#: is off) makes the bus message carry that trace, so accounting joins it.
Fire = Callable[[str, events_pb2.Envelope, Span | None], None]


@dataclass(slots=True)
class _Call:
    from_tag: str
    caller: str
    callee: str
    ruri: str
    caller_address: common_pb2.Address
    to_tag: str = ""
    early: bool = False
    answered: bool = False
    started_at: float = 0.0


@dataclass(slots=True)
class DialogCounts:
    """Kamailio's dialog module statistics of this edge (see the module docstring)."""

    early: int = 0
    active: int = 0
    processed: int = 0
    failed: int = 0
    expired: int = 0


def _uri(request: Request | Response, which: str) -> tuple[str, str]:
    """(URI, tag) of From or To."""
    try:
        addr = request.from_ if which == "from" else request.to
    except ParseError:
        return "", ""
    return str(addr.uri), addr.tag or ""


class DialogEvents:
    def __init__(
        self,
        fire: Fire,
        max_dialogs: int = _MAX_DIALOGS,
        *,
        timeout: float = _DIALOG_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fire = fire
        self._max = max_dialogs
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._timeout = timeout
        self._clock = clock
        self._next_sweep = 0.0
        self.counts = DialogCounts()

    def __len__(self) -> int:
        return len(self._calls)

    def started(self, ptx: ProxyTransaction) -> None:
        """An initial INVITE was relayed with Record-Route."""
        request = ptx.request
        if ptx.dialog or request.method != "INVITE":
            return
        caller, from_tag = _uri(request, "from")
        callee, to_tag = _uri(request, "to")
        if to_tag:
            return  # re-INVITE: the dialog exists already
        call_id = request.get("Call-ID") or ""
        ptx.dialog = True
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        call = _Call(from_tag, caller, callee, request.uri, ptx.source_pb.remote)
        call.started_at = now
        replaced = self._calls.pop(call_id, None)
        if replaced is not None:
            self._forget(replaced, expired=False)
        self._calls[call_id] = call
        while len(self._calls) > self._max:
            self._forget(self._calls.popitem(last=False)[1], expired=True)
        self._emit(_State.STATE_START, call_id, call, ptx, 0)

    def _forget(self, call: _Call, *, expired: bool) -> None:
        """A call leaves the table: its state no longer counts (expired: no BYE seen)."""
        counts = self.counts
        if call.answered:
            counts.active -= 1
            counts.expired += expired
        elif call.early:
            counts.early -= 1

    def _sweep(self, now: float) -> None:
        """Drop calls older than the dialog timeout (the dialog module's expiry).

        The table is in start order, so only its head is looked at; this runs at most
        once a minute, from ``started``, and costs nothing per message otherwise.
        """
        self._next_sweep = now + min(60.0, self._timeout / 4)
        limit = now - self._timeout
        calls = self._calls
        while calls:
            call_id, call = next(iter(calls.items()))
            if call.started_at > limit:
                break
            del calls[call_id]
            self._forget(call, expired=True)

    def provisional(self, ptx: ProxyTransaction, response: Response) -> None:
        """A provisional was relayed upstream: the first with a To tag is ``early``."""
        if not ptx.dialog:
            return
        call_id = ptx.request.get("Call-ID") or ""
        call = self._calls.get(call_id)
        _, to_tag = _uri(response, "to")
        if call is None or call.early or call.answered or not to_tag:
            return
        call.early = True
        call.to_tag = to_tag
        self.counts.early += 1
        self._emit(_State.STATE_EARLY, call_id, call, ptx, response.status)

    def final(self, ptx: ProxyTransaction, response: Response) -> None:
        """The transaction's final response went upstream."""
        method = ptx.request.method
        if method == "INVITE" and ptx.dialog:
            self._invite_final(ptx, response)
        elif method == "BYE" and response.status not in (401, 407) and ptx.branches:
            # Only a BYE that was relayed: one the router answered itself (404 Not
            # here for an unknown dialog) says nothing about a call of ours.
            call_id = ptx.request.get("Call-ID") or ""
            call = self._calls.pop(call_id, None)
            reason = "bye"
            if call is not None:
                self._forget(call, expired=False)
            if call is None:
                from_tag, to_tag = _uri(ptx.request, "from")[1], _uri(ptx.request, "to")[1]
                # Unknown here: end it by Call-ID (consumers match on it); who hung
                # up cannot be told without the INVITE's From tag.
                call = _Call(from_tag, "", "", "", common_pb2.Address(), to_tag)
            else:
                # Who hung up (free text after the reason word, events.proto): the
                # caller's in-dialog requests carry the INVITE's From tag (RFC 3261
                # §12.2.1.1), the callee's its own tag. RFC 4235's local-/remote-bye.
                by_caller = _uri(ptx.request, "from")[1] == call.from_tag
                reason = "bye caller" if by_caller else "bye callee"
            self._emit(_State.STATE_END, call_id, call, ptx, response.status, reason)

    def _invite_final(self, ptx: ProxyTransaction, response: Response) -> None:
        call_id = ptx.request.get("Call-ID") or ""
        call = self._calls.get(call_id)
        if call is None:
            return
        status = response.status
        if 200 <= status < 300:
            if call.answered:
                return
            call.answered = True
            counts = self.counts
            counts.early -= call.early
            counts.active += 1
            counts.processed += 1
            call.to_tag = _uri(response, "to")[1] or call.to_tag
            self._emit(_State.STATE_ANSWER, call_id, call, ptx, status)
            return
        del self._calls[call_id]
        counts = self.counts
        if call.answered:
            counts.active -= 1  # the 2xx was answered before (a forked INVITE): it ends
        else:
            counts.early -= call.early
            counts.failed += 1
        reason = "cancel" if ptx.cancelled and status == 487 else "failure"
        self._emit(_State.STATE_END, call_id, call, ptx, status, reason)

    def _emit(
        self,
        state: events_pb2.DialogEvent.State.ValueType,
        call_id: str,
        call: _Call,
        ptx: ProxyTransaction,
        status: int,
        reason: str = "",
    ) -> None:
        event = events_pb2.DialogEvent(
            state=state,
            call_id=call_id,
            from_tag=call.from_tag,
            to_tag=call.to_tag,
            caller=call.caller,
            callee=call.callee,
            reason=reason,
            status=status,
            caller_address=call.caller_address,
            ruri=call.ruri,
        )
        subject = _SUBJECTS[state]
        # Unique per event: one transaction publishes each state at most once.
        event_id = f"dlg:{subject.rsplit('.', 1)[1]}:{ptx.tx_id}:{call_id}"
        self._fire(subject, events_pb2.Envelope(id=event_id, dialog=event), ptx.span)
