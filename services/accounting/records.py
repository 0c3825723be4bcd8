"""Events to records: pure mapping of bus events to acc, missed_calls and cdrs rows.

No I/O here. ``plan(envelope)`` says what one event contributes: at most one ``acc``
row, at most one ``missed_calls`` row, and a partial CDR (``CdrUpdate``) that
``merge_cdr`` folds into the call's ``cdrs`` row.

acc semantics follow Kamailio's acc module as kamailio.cfg configures it
(WITH_ACCDB): a transaction flagged ``acc`` (db_flag, FLT_ACC) is written to ``acc``
when it completes with a 2xx, or with any final status when it is also flagged
``failed`` (failed_transaction_flag, FLT_ACCFAILED); an INVITE flagged ``missed``
(db_missed_flag, FLT_ACCMISSED) that ends with a status >= 300 is written to
``missed_calls``. The extra columns are kamailio.cfg's acc_extra:
src_user=$fU, src_domain=$fd, src_ip=$si, dst_ouser=$tU, dst_user=$rU,
dst_domain=$rd, overridden by the values a routing script set with acc_extra().

CDRs pair the INVITE's final response with the BYE (or a dialog end, or the dialog
timeout). Events of one call may be processed in any order (several consumers,
redeliveries), so ``merge_cdr`` is order-independent: the start is the earliest
time seen, the answer the earliest 2xx, an explicit end (BYE, dialog end) beats the
timeout close, and a 2xx beats an INVITE failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sipmesh.gen.sipmesh.v1 import events_pb2

#: acc / missed_calls columns, in table order (without the id).
ACC_COLUMNS: tuple[str, ...] = (
    "method",
    "from_tag",
    "to_tag",
    "callid",
    "sip_code",
    "sip_reason",
    "time",
    "src_user",
    "src_domain",
    "src_ip",
    "dst_ouser",
    "dst_user",
    "dst_domain",
)
#: The extra columns a script may set through acc_extra().
EXTRA_COLUMNS: frozenset[str] = frozenset(ACC_COLUMNS[7:])
#: cdrs columns (without the id).
CDR_COLUMNS: tuple[str, ...] = (
    "call_id",
    "from_tag",
    "to_tag",
    "caller",
    "callee",
    "src_ip",
    "dst_uri",
    "start_time",
    "answer_time",
    "end_time",
    "duration",
    "status",
    "end_reason",
)

# Column widths of the schema (sipmesh/state/sql): values are clipped, never rejected.
_WIDTHS = {
    "method": 16,
    "from_tag": 128,
    "to_tag": 128,
    "callid": 255,
    "call_id": 255,
    "sip_code": 3,
    "sip_reason": 128,
    "src_user": 64,
    "src_domain": 128,
    "src_ip": 64,
    "dst_ouser": 64,
    "dst_user": 64,
    "dst_domain": 128,
    "caller": 255,
    "callee": 255,
    "dst_uri": 255,
    "end_reason": 32,
}

#: How a call ended (cdrs.end_reason).
END_BYE = "bye"
END_CANCEL = "cancel"
END_BUSY = "busy"
END_DECLINED = "declined"
END_UNANSWERED = "unanswered"
END_FAILED = "failed"
END_TIMEOUT = "timeout"
END_MEDIA_TIMEOUT = "media-timeout"
#: End reasons of a call that was never answered (an INVITE failure).
FAILURE_REASONS: frozenset[str] = frozenset(
    {END_CANCEL, END_BUSY, END_DECLINED, END_UNANSWERED, END_FAILED}
)

# A transaction timestamp further than this from the envelope's wall-clock time is on
# another clock (an older edge's monotonic loop clock): see ``_wall_clock``.
_CLOCK_DOMAIN_GAP = 1e6


def clip(column: str, value: str) -> str:
    width = _WIDTHS.get(column)
    return value[:width] if width is not None else value


def to_datetime(t: float) -> datetime:
    """Epoch seconds -> naive UTC datetime (the tables' timestamp convention)."""
    return datetime.fromtimestamp(t, tz=UTC).replace(tzinfo=None)


def from_datetime(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


def event_key(envelope: events_pb2.Envelope, fallback: str) -> str:
    """The idempotency key of an event (events_processed.event_id, 128 chars).

    ``Envelope.id`` is unique per event (events.proto); ``fallback`` (e.g. the stream
    sequence) stands in for an id-less envelope. Longer ids are hashed.
    """
    key = envelope.id or fallback
    if len(key) > 128:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def end_reason_for_status(status: int) -> str:
    """How an INVITE that failed with ``status`` ended (RFC 3261 §21 classes)."""
    if status == 487:
        return END_CANCEL  # Request Terminated: the caller CANCELled (§9.1)
    if status in (486, 600):
        return END_BUSY
    if status == 603:
        return END_DECLINED
    if status in (408, 480):
        return END_UNANSWERED  # no answer before timer C / the callee's timeout
    return END_FAILED


def split_uri(uri: str) -> tuple[str, str]:
    """(user, host) of a SIP/SIPS/TEL URI or name-addr, tolerant of junk."""
    text = uri.strip()
    if "<" in text and ">" in text:
        text = text[text.index("<") + 1 : text.index(">")]
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split(";", 1)[0].split("?", 1)[0]
    user, _, host = text.rpartition("@")
    # An IPv6 reference keeps its brackets (RFC 3261 §25.1); a port goes.
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    return user, host


def aor(user: str, domain: str) -> str:
    return f"{user}@{domain}" if user else domain


@dataclass(frozen=True, slots=True)
class AccRow:
    """One row of ``acc`` or ``missed_calls`` (same columns)."""

    method: str
    from_tag: str
    to_tag: str
    callid: str
    sip_code: str
    sip_reason: str
    time: float
    src_user: str = ""
    src_domain: str = ""
    src_ip: str = ""
    dst_ouser: str = ""
    dst_user: str = ""
    dst_domain: str = ""

    def params(self) -> list[Any]:
        """Values in ACC_COLUMNS order, clipped to the column widths."""
        out: list[Any] = []
        for column in ACC_COLUMNS:
            value = getattr(self, column)
            out.append(to_datetime(value) if column == "time" else clip(column, value))
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(ACC_COLUMNS, self.params(), strict=True))


@dataclass(frozen=True, slots=True)
class CdrUpdate:
    """What one event tells about a call; folded into its row by ``merge_cdr``."""

    call_id: str
    #: A time the call had started by (INVITE received; any later event's own time).
    seen_at: float
    #: True for the call's initial INVITE or dialog start: its identity fields win.
    origin: bool = False
    from_tag: str = ""
    to_tag: str = ""
    caller: str = ""
    callee: str = ""
    src_ip: str = ""
    dst_uri: str = ""
    #: dst_uri is only a fallback (a dialog start's R-URI as received), never
    #: replacing the winning branch's R-URI an INVITE transaction reports.
    dst_fallback: bool = False
    answer_time: float | None = None
    #: Final status of the INVITE (2xx with answer_time, >= 300 with a failure end).
    status: int = 0
    end_time: float | None = None
    end_reason: str = ""


@dataclass(frozen=True, slots=True)
class Cdr:
    """The state of one call's ``cdrs`` row (times in epoch seconds)."""

    call_id: str
    start_time: float
    from_tag: str = ""
    to_tag: str = ""
    caller: str = ""
    callee: str = ""
    src_ip: str = ""
    dst_uri: str = ""
    answer_time: float | None = None
    end_time: float | None = None
    status: int = 0
    end_reason: str = ""

    @property
    def duration(self) -> float:
        """Billable seconds: answer -> end (0 for a call never answered or not ended)."""
        if self.answer_time is None or self.end_time is None:
            return 0.0
        return round(max(0.0, self.end_time - self.answer_time), 6)

    @property
    def open(self) -> bool:
        return self.end_time is None

    def params(self) -> list[Any]:
        """Values in CDR_COLUMNS order, ready for the database."""
        out: list[Any] = []
        for column in CDR_COLUMNS:
            if column == "duration":
                out.append(self.duration)
            elif column in ("start_time", "answer_time", "end_time"):
                value = getattr(self, column)
                out.append(None if value is None else to_datetime(value))
            elif column == "status":
                out.append(self.status)
            else:
                out.append(clip(column, getattr(self, column)))
        return out

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(CDR_COLUMNS, self.params(), strict=True))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Cdr:
        def t(value: datetime | None) -> float | None:
            return None if value is None else from_datetime(value)

        start = t(row["start_time"])
        assert start is not None
        return cls(
            call_id=row["call_id"],
            start_time=start,
            from_tag=row["from_tag"],
            to_tag=row["to_tag"],
            caller=row["caller"],
            callee=row["callee"],
            src_ip=row["src_ip"],
            dst_uri=row["dst_uri"],
            answer_time=t(row["answer_time"]),
            end_time=t(row["end_time"]),
            status=int(row["status"]),
            end_reason=row["end_reason"],
        )


def _end_rank(reason: str) -> int:
    # An explicit end (BYE, dialog end, INVITE failure) is what happened; the timeout
    # close is a guess made for want of one, so a late BYE replaces it.
    if not reason:
        return 0
    return 1 if reason == END_TIMEOUT else 2


def merge_cdr(current: Cdr | None, update: CdrUpdate) -> Cdr:
    """Fold ``update`` into ``current``; the same result whatever the order of updates."""
    cdr = current or Cdr(call_id=update.call_id, start_time=update.seen_at)
    fields: dict[str, Any] = {"start_time": min(cdr.start_time, update.seen_at)}
    for name in ("from_tag", "caller", "callee", "src_ip", "dst_uri"):
        value = getattr(update, name)
        overrides = update.origin and not (name == "dst_uri" and update.dst_fallback)
        if value and (overrides or not getattr(cdr, name)):
            fields[name] = value
    if update.to_tag and (not cdr.to_tag or update.answer_time is not None):
        fields["to_tag"] = update.to_tag
    answer = cdr.answer_time
    if update.answer_time is not None:
        if answer is None or update.answer_time <= answer:
            # The earliest 2xx answered the call (RFC 3261 §13.2.2.4: the first 2xx
            # of a forked INVITE makes the dialog the caller keeps).
            answer = update.answer_time
            fields["status"] = update.status or 200
        fields["answer_time"] = answer
    elif update.status and answer is None and not 200 <= cdr.status < 300:
        fields["status"] = update.status
    end_time, end_reason = cdr.end_time, cdr.end_reason
    if update.end_time is not None:
        new_rank, old_rank = _end_rank(update.end_reason), _end_rank(end_reason)
        if (
            end_time is None
            or new_rank > old_rank
            or (new_rank == old_rank and update.end_time < end_time)
        ):
            end_time, end_reason = update.end_time, update.end_reason
    if answer is not None and end_reason in FAILURE_REASONS:
        # A 2xx was seen: a failure belongs to another transaction (a re-INVITE).
        end_time, end_reason = None, ""
    fields["end_time"], fields["end_reason"] = end_time, end_reason
    return replace(cdr, **fields)


def close_by_timeout(cdr: Cdr, dialog_timeout: float) -> Cdr:
    """The dialog timeout's close: the call ends ``dialog_timeout`` after it last
    changed state (answer, or start when never answered), as the dialog module's."""
    base = cdr.answer_time if cdr.answer_time is not None else cdr.start_time
    return merge_cdr(
        cdr,
        CdrUpdate(
            call_id=cdr.call_id,
            seen_at=cdr.start_time,
            end_time=base + dialog_timeout,
            end_reason=END_TIMEOUT,
        ),
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one event writes."""

    acc: AccRow | None = None
    missed: AccRow | None = None
    cdr: CdrUpdate | None = None

    @property
    def empty(self) -> bool:
        return self.acc is None and self.missed is None and self.cdr is None


def _wall_clock(envelope: events_pb2.Envelope, tx: events_pb2.TransactionEvent) -> float:
    """The offset that puts the transaction's timestamps on the wall clock.

    Edges stamp transactions on the wall clock (time.time) since issue 4's
    follow-up, so the offset is 0 for them. Earlier edges used their event loop's
    monotonic clock; their events may still sit in the durable stream during an
    upgrade (or be replayed), so they are still put on the wall clock here through
    the envelope time, stamped at publication right after the final response
    (finished_at). Kept until no such event can remain.
    """
    if envelope.time and tx.finished_at and abs(envelope.time - tx.finished_at) > _CLOCK_DOMAIN_GAP:
        return envelope.time - tx.finished_at
    return 0.0


def plan_transaction(envelope: events_pb2.Envelope) -> Plan:
    tx = envelope.transaction
    if not (tx.acc or tx.missed or tx.failed) or tx.status == 0 or not tx.call_id:
        return Plan()  # not flagged by the router, or never answered (dropped)
    offset = _wall_clock(envelope, tx)
    finished = (tx.finished_at or envelope.time) + offset
    started = tx.started_at + offset if tx.started_at else finished
    method = tx.method.upper()
    dst_user, dst_domain = split_uri(tx.dst_uri or tx.ruri)
    extra = {
        "src_user": tx.from_user,
        "src_domain": tx.from_domain,
        "src_ip": tx.source.host,
        "dst_ouser": tx.to_user,
        "dst_user": dst_user,
        "dst_domain": dst_domain,
    }
    extra.update({k: v for k, v in tx.acc_extra.items() if k in EXTRA_COLUMNS})
    row = AccRow(
        method=method,
        from_tag=tx.from_tag,
        to_tag=tx.to_tag,
        callid=tx.call_id,
        sip_code=str(tx.status),
        sip_reason=tx.reason,
        time=finished,
        **extra,
    )
    acc = row if tx.acc and (tx.status < 300 or tx.failed) else None
    missed = row if tx.missed and method == "INVITE" and tx.status >= 300 else None
    cdr: CdrUpdate | None = None
    if method == "INVITE":
        answered = 200 <= tx.status < 300
        failed = tx.status >= 300
        cdr = CdrUpdate(
            call_id=tx.call_id,
            seen_at=started,
            origin=True,
            from_tag=tx.from_tag,
            to_tag=tx.to_tag,
            caller=aor(tx.from_user, tx.from_domain),
            callee=aor(tx.to_user, tx.to_domain),
            src_ip=tx.source.host,
            dst_uri=tx.dst_uri,
            answer_time=finished if answered else None,
            status=tx.status if tx.status >= 200 else 0,
            end_time=finished if failed else None,
            end_reason=end_reason_for_status(tx.status) if failed else "",
        )
    elif method == "BYE" and tx.status not in (401, 407):
        # A challenged BYE is sent again with credentials; any other answer ends the
        # dialog (RFC 3261 §15.1.2: the UAC considers the session over at once).
        cdr = CdrUpdate(call_id=tx.call_id, seen_at=started, end_time=started, end_reason=END_BYE)
    return Plan(acc=acc, missed=missed, cdr=cdr)


_DIALOG_END_REASONS = {
    "bye": END_BYE,
    "cancel": END_CANCEL,
    "timeout": END_TIMEOUT,
    "media-timeout": END_MEDIA_TIMEOUT,
}


def plan_dialog(envelope: events_pb2.Envelope) -> Plan:
    """A DialogEvent (events.proto, RFC 4235 states) as a CDR contribution."""
    dlg = envelope.dialog
    if not dlg.call_id:
        return Plan()
    at = envelope.time
    State = events_pb2.DialogEvent
    caller_user, caller_host = split_uri(dlg.caller) if dlg.caller else ("", "")
    callee_user, callee_host = split_uri(dlg.callee) if dlg.callee else ("", "")
    identity: dict[str, Any] = {
        "from_tag": dlg.from_tag,
        "to_tag": dlg.to_tag,
        "caller": aor(caller_user, caller_host) if dlg.caller else "",
        "callee": aor(callee_user, callee_host) if dlg.callee else "",
        "src_ip": dlg.caller_address.host,
        "dst_uri": dlg.ruri,
    }
    if dlg.state == State.STATE_START:
        # The dialog's R-URI is the one received; the INVITE's event names the branch
        # that answered (cdrs.dst_uri), whichever of the two is processed first.
        update = CdrUpdate(
            call_id=dlg.call_id, seen_at=at, origin=True, dst_fallback=True, **identity
        )
    elif dlg.state == State.STATE_EARLY:
        update = CdrUpdate(call_id=dlg.call_id, seen_at=at, to_tag=dlg.to_tag)
    elif dlg.state == State.STATE_ANSWER:
        update = CdrUpdate(
            call_id=dlg.call_id,
            seen_at=at,
            to_tag=dlg.to_tag,
            answer_time=at,
            status=dlg.status or 200,
        )
    elif dlg.state == State.STATE_END:
        word = dlg.reason.split(" ", 1)[0].lower()
        if word == "failure" or (dlg.status >= 300 and word not in _DIALOG_END_REASONS):
            reason = end_reason_for_status(dlg.status)
        else:
            reason = _DIALOG_END_REASONS.get(word, END_BYE)
        update = CdrUpdate(
            call_id=dlg.call_id,
            seen_at=at,
            status=dlg.status if dlg.status >= 300 else 0,
            end_time=at,
            end_reason=reason,
        )
    else:
        return Plan()
    return Plan(cdr=update)


def plan(envelope: events_pb2.Envelope) -> Plan:
    """What ``envelope`` writes: acc / missed_calls rows and a CDR update, or nothing."""
    kind = envelope.WhichOneof("event")
    if kind == "transaction":
        return plan_transaction(envelope)
    if kind == "dialog":
        return plan_dialog(envelope)
    return Plan()
