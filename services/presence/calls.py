"""The dialog package's state from the call events of the bus (pua_dialoginfo's job).

Consumed subjects (events.proto): ``sipmesh.dialog.<start|early|answer|end>``
(DialogEvent) and ``sipmesh.transaction.INVITE`` / ``.BYE`` (TransactionEvent, what
the edge publishes for every finished transaction: a 2xx INVITE confirms a call, a
failure ends it, a BYE ends it). Each call gives two publications in ``presentity``
(event "dialog"): the caller's (direction initiator) and the callee's (recipient),
under entity tags derived from the Call-ID, so the events of one call update the
same rows whichever instance processes them. A terminated call stays
``dialog_linger`` seconds, so watchers see it end, then the sweep removes it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from functools import partial

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.presence.model import Publication, presentity_uri, split_uri
from sipmesh.presence.packages.dialog import dialog_document, termination_event
from sipmesh.presence.store import PresenceStore
from sipmesh.presence.subscriptions import Announce
from sipmesh.presence.xmlsafe import escape

log = logging.getLogger("sipmesh.presence")
# Compare-and-set attempts of one call state write (see CallState._write).
_ATTEMPTS = 5
# A call's state is kept this long without news (Kamailio dialog's default_timeout).
CALL_LIFETIME = 43200
_STATE_RE = re.compile(rb"<state[^>]*>\s*[a-z]+\s*</state>")
_STATE_VALUE_RE = re.compile(rb"<state[^>]*>\s*([a-z]+)\s*</state>")
_LOCAL_TAG_RE = re.compile(rb'<dialog [^>]*local-tag="([^"]*)"')
# RFC 4235 §3.7.1: a dialog only moves forward through these states.
_RANK = {"trying": 0, "proceeding": 1, "early": 2, "confirmed": 3, "terminated": 4}
_DIALOG_STATES = {
    events_pb2.DialogEvent.STATE_START: "trying",
    events_pb2.DialogEvent.STATE_EARLY: "early",
    events_pb2.DialogEvent.STATE_ANSWER: "confirmed",
    events_pb2.DialogEvent.STATE_END: "terminated",
}


def _digest(call_id: str) -> str:
    return hashlib.blake2s(call_id.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def etags(call_id: str) -> tuple[str, str]:
    d = _digest(call_id)
    return f"dlg-{d}-i", f"dlg-{d}-r"


class CallState:
    def __init__(self, store: PresenceStore, announce: Announce, linger: float) -> None:
        self._store = store
        self._announce = announce
        self._linger = linger

    async def on_envelope(self, envelope: events_pb2.Envelope, now: int) -> bool:
        kind = envelope.WhichOneof("event")
        if kind == "dialog":
            ev = envelope.dialog
            state = _DIALOG_STATES.get(ev.state)
            if state is None:
                return False
            word, _, detail = ev.reason.partition(" ")
            # "bye caller" / "bye callee": who hung up (services/edge/dialogs.py).
            by_caller = {"caller": True, "callee": False}.get(detail.strip())
            if state == "terminated" and not ev.caller:
                await self.end(ev.call_id, word or "bye", now, status=ev.status)
                return True
            await self.update(
                state,
                ev.call_id,
                ev.from_tag,
                ev.to_tag,
                ev.caller,
                ev.callee or ev.ruri,
                now,
                word,
                status=ev.status,
                by_caller=by_caller,
            )
            return True
        if kind == "transaction":
            tx = envelope.transaction
            if tx.method == "BYE":
                # The BYE's From tag is the tag of the side that sent it.
                await self.end(tx.call_id, "bye", now, by_tag=tx.from_tag)
                return True
            if tx.method != "INVITE" or tx.status < 200:
                return False
            if tx.status >= 300 and (not tx.dst_uri or tx.status in (401, 407)):
                # Answered by the proxy itself (a 407 challenge, 404 without binding)
                # or a challenge from downstream: no call was set up, so no dialog
                # to report (Kamailio's dialog module tracks relayed INVITEs only).
                return False
            caller = presentity_uri(tx.from_user, tx.from_domain)
            callee = presentity_uri(tx.to_user, tx.to_domain)
            if tx.status < 300:
                await self.update(
                    "confirmed", tx.call_id, tx.from_tag, tx.to_tag, caller, callee, now
                )
            else:
                await self.update(
                    "terminated",
                    tx.call_id,
                    tx.from_tag,
                    tx.to_tag,
                    caller,
                    callee,
                    now,
                    "failure",
                    status=tx.status,
                )
            return True
        return False

    async def update(
        self,
        state: str,
        call_id: str,
        from_tag: str,
        to_tag: str,
        caller: str,
        callee: str,
        now: int,
        reason: str = "",
        *,
        status: int = 0,
        by_caller: bool | None = None,
    ) -> None:
        """Store the call's state on both sides; ``reason`` is the edge's end reason
        word, turned into RFC 4235 §4.1.2's ``event`` per side (``by_caller``: the
        caller sent the BYE, None when not known)."""
        dialog_id = _digest(call_id + "\x00" + from_tag)
        etag_i, etag_r = etags(call_id)
        expires = now + (int(self._linger) if state == "terminated" else CALL_LIFETIME)
        sides = (
            (caller, callee, "initiator", from_tag, to_tag, etag_i),
            (callee, caller, "recipient", to_tag, from_tag, etag_r),
        )
        for entity, remote, direction, local_tag, remote_tag, etag in sides:
            local = None if by_caller is None else by_caller == (direction == "initiator")
            event = termination_event(reason, status, local=local) if reason else ""
            user, domain = split_uri(entity)
            if not user or not domain:
                continue
            uri = presentity_uri(user, domain)
            body = dialog_document(
                uri,
                dialog_id=dialog_id,
                call_id=call_id,
                local_tag=local_tag,
                remote_tag=remote_tag,
                direction=direction,
                state=state,
                local_identity=uri,
                remote_identity=remote,
                event=event,
            )
            await self._write(
                user, domain, etag, expires, now, partial(_newer, body=body, state=state)
            )

    async def end(
        self, call_id: str, reason: str, now: int, *, status: int = 0, by_tag: str = ""
    ) -> None:
        """The call is over (BYE): both sides' dialogs become terminated.

        ``by_tag`` is the From tag of the BYE: the side whose local tag it is hung
        up (local-bye), the other side sees remote-bye (RFC 4235 §4.1.2).
        """
        expires = now + int(self._linger)

        def ended(old: bytes | None) -> bytes | None:
            if old is None or _state_of(old) == "terminated":
                return None
            local: bool | None = None
            if by_tag:
                found = _LOCAL_TAG_RE.search(old)
                if found is not None:
                    local = found.group(1) == escape(by_tag).encode()
            event = termination_event(reason, status, local=local)
            attr = f' event="{event}"' if event else ""
            return _STATE_RE.sub(f"<state{attr}>terminated</state>".encode(), old, count=1)

        for pub in await self._store.publications_by_etag("dialog", list(etags(call_id))):
            await self._write(pub.username, pub.domain, pub.etag, expires, now, ended)

    async def _write(
        self,
        user: str,
        domain: str,
        etag: str,
        expires: int,
        now: int,
        decide: Callable[[bytes | None], bytes | None],
    ) -> None:
        """Compare-and-set one side's call state: ``decide(current body)`` gives the
        new body or None (nothing new). Events of one call are processed by any
        presence instance (queue group), so a write that lost the race re-reads
        the row and decides again instead of overwriting a newer state."""
        for _ in range(_ATTEMPTS):
            current = await self._store.get_publication(user, domain, "dialog", etag)
            old = current.body if current is not None else None
            body = decide(old)
            if body is None:
                return
            pub = Publication(user, domain, "dialog", etag, expires, now, body, "calls")
            if await self._store.swap_publication(pub, uuid.uuid4().hex, old):
                await self._announce("dialog", presentity_uri(user, domain))
                return
        log.warning(
            "dialog state of %s@%s not written: %d concurrent updates", user, domain, _ATTEMPTS
        )


def _state_of(body: bytes) -> str:
    found = _STATE_VALUE_RE.search(body)
    return found.group(1).decode() if found is not None else ""


def _newer(current: bytes | None, body: bytes, state: str) -> bytes | None:
    """``body``, or None when it would tell watchers nothing new about the call.

    The edge reports a call twice (its DialogEvents and the INVITE's
    TransactionEvent), and events of different subjects may arrive out of order
    across instances: the same document again, a state behind the stored one, or
    anything after "terminated" is not stored, so no NOTIFY repeats or goes back.
    """
    if current is None:
        return body
    if current == body:
        return None
    old = _state_of(current)
    if old == "terminated" or _RANK.get(state, 0) < _RANK.get(old, 0):
        return None
    return body
