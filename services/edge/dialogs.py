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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.sip import ParseError, Request, Response

from .branches import ProxyTransaction

__all__ = ["DialogEvents"]

_State = events_pb2.DialogEvent
_SUBJECTS = {
    _State.STATE_START: "sipmesh.dialog.start",
    _State.STATE_EARLY: "sipmesh.dialog.early",
    _State.STATE_ANSWER: "sipmesh.dialog.answer",
    _State.STATE_END: "sipmesh.dialog.end",
}
_MAX_DIALOGS = 100_000

Fire = Callable[[str, events_pb2.Envelope], None]


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


def _uri(request: Request | Response, which: str) -> tuple[str, str]:
    """(URI, tag) of From or To."""
    try:
        addr = request.from_ if which == "from" else request.to
    except ParseError:
        return "", ""
    return str(addr.uri), addr.tag or ""


class DialogEvents:
    def __init__(self, fire: Fire, max_dialogs: int = _MAX_DIALOGS) -> None:
        self._fire = fire
        self._max = max_dialogs
        self._calls: OrderedDict[str, _Call] = OrderedDict()

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
        call = _Call(from_tag, caller, callee, request.uri, ptx.source_pb.remote)
        self._calls[call_id] = call
        self._calls.move_to_end(call_id)
        while len(self._calls) > self._max:
            self._calls.popitem(last=False)
        self._emit(_State.STATE_START, call_id, call, ptx, 0)

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
            call.to_tag = _uri(response, "to")[1] or call.to_tag
            self._emit(_State.STATE_ANSWER, call_id, call, ptx, status)
            return
        del self._calls[call_id]
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
        self._fire(subject, events_pb2.Envelope(id=event_id, dialog=event))
