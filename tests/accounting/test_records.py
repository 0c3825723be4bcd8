"""Events to acc / missed_calls rows and CDRs: the pure mapping and the CDR merge."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import pytest

from sipmesh.accounting.records import (
    AccRow,
    Cdr,
    CdrUpdate,
    close_by_timeout,
    end_reason_for_status,
    event_key,
    merge_cdr,
    plan,
    split_uri,
)
from sipmesh.accounting.testing import Party, call_events, transaction_event
from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2

Envelope = events_pb2.Envelope

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
ALICE = Party()
BOB = Party("bob", "example.com", "totag1", "192.0.2.20")


def fold(envelopes: list[events_pb2.Envelope]) -> Cdr | None:
    cdr: Cdr | None = None
    for env in envelopes:
        update = plan(env).cdr
        if update is not None:
            cdr = merge_cdr(cdr, update)
    return cdr


def test_answered_call_acc_rows_and_cdr() -> None:
    invite, bye = call_events("answered", "call-a", T0, ring=2.0, talk=30.0, mono_offset=5e8)
    p_invite, p_bye = plan(invite), plan(bye)
    assert p_invite.acc == AccRow(
        method="INVITE",
        from_tag="fromtag1",
        to_tag="totag1",
        callid="call-a",
        sip_code="200",
        sip_reason="OK",
        time=T0 + 2.0,
        src_user="alice",
        src_domain="example.com",
        src_ip="192.0.2.10",
        dst_ouser="bob",
        dst_user="bob",
        dst_domain="192.0.2.20",
    )
    assert p_invite.missed is None
    assert p_bye.acc is not None
    assert p_bye.acc.as_dict() == {
        "method": "BYE",
        "from_tag": "fromtag1",
        "to_tag": "totag1",
        "callid": "call-a",
        "sip_code": "200",
        "sip_reason": "OK",
        "time": datetime(2023, 11, 14, 22, 13, 52, 50000),
        "src_user": "alice",
        "src_domain": "example.com",
        "src_ip": "192.0.2.10",
        "dst_ouser": "bob",
        "dst_user": "bob",
        "dst_domain": "192.0.2.20",
    }
    cdr = fold([invite, bye])
    assert cdr == Cdr(
        call_id="call-a",
        start_time=T0,
        from_tag="fromtag1",
        to_tag="totag1",
        caller="alice@example.com",
        callee="bob@example.com",
        src_ip="192.0.2.10",
        dst_uri="sip:bob@192.0.2.20:5060",
        answer_time=T0 + 2.0,
        end_time=T0 + 32.0,
        status=200,
        end_reason="bye",
    )
    assert cdr.duration == 30.0


@pytest.mark.parametrize(
    ("outcome", "code", "reason", "end"),
    [
        ("busy", "486", "Busy Here", "busy"),
        ("cancelled", "487", "Request Terminated", "cancel"),
        ("unanswered", "408", "Request Timeout", "unanswered"),
    ],
)
def test_failed_calls_are_missed_not_acc(outcome: str, code: str, reason: str, end: str) -> None:
    (invite,) = call_events(outcome, "call-f", T0, ring=7.5)
    p = plan(invite)
    # kamailio.cfg: FLT_ACC without FLT_ACCFAILED logs no failed INVITE in acc.
    assert p.acc is None
    assert p.missed is not None
    assert (p.missed.method, p.missed.sip_code, p.missed.sip_reason) == ("INVITE", code, reason)
    assert p.missed.time == T0 + 7.5
    assert (p.missed.src_user, p.missed.dst_ouser, p.missed.src_ip) == (
        "alice",
        "bob",
        "192.0.2.10",
    )
    cdr = fold([invite])
    assert cdr is not None
    assert (cdr.status, cdr.end_reason, cdr.duration) == (int(code), end, 0.0)
    assert (cdr.start_time, cdr.answer_time, cdr.end_time) == (T0, None, T0 + 7.5)


def test_failed_flag_puts_failures_in_acc_and_extra_overrides() -> None:
    env = transaction_event(
        "INVITE",
        call_id="c",
        status=404,
        reason="Not Found",
        started=T0,
        finished=T0 + 0.1,
        caller=ALICE,
        callee=BOB,
        from_tag="f",
        to_tag="t",
        source_ip="198.51.100.1",
        acc=True,
        failed=True,
    )
    env.transaction.acc_extra["dst_domain"] = "pstn.example"
    env.transaction.acc_extra["not_a_column"] = "x"
    p = plan(env)
    assert p.acc is not None
    assert p.missed is None
    assert (p.acc.sip_code, p.acc.dst_domain, p.acc.dst_user) == ("404", "pstn.example", "bob")


def test_unflagged_and_unfinished_transactions_write_nothing() -> None:
    common = {
        "call_id": "c",
        "reason": "OK",
        "started": T0,
        "finished": T0,
        "caller": ALICE,
        "callee": BOB,
        "from_tag": "f",
        "to_tag": "t",
        "source_ip": "192.0.2.1",
    }
    assert plan(transaction_event("REGISTER", status=200, acc=False, **common)).empty  # type: ignore[arg-type]
    assert plan(transaction_event("INVITE", status=0, **common)).empty  # type: ignore[arg-type]
    assert plan(events_pb2.Envelope(id="x", ban=events_pb2.BanEvent(ip="1.2.3.4"))).empty


def test_callee_hangs_up_and_challenged_bye_does_not_end() -> None:
    invite, bye = call_events("answered", "c2", T0, talk=10.0, hangup_by="callee")
    assert bye.transaction.from_user == "bob"
    p = plan(bye)
    assert p.acc is not None
    assert p.acc.src_user == "bob"
    assert p.acc.dst_ouser == "alice"
    cdr = fold([invite, bye])
    assert cdr is not None
    assert cdr.caller == "alice@example.com"
    assert cdr.duration == 10.0
    challenged = transaction_event(
        "BYE",
        call_id="c2",
        status=407,
        reason="Proxy Authentication Required",
        started=T0 + 5,
        finished=T0 + 5,
        caller=ALICE,
        callee=BOB,
        from_tag="fromtag1",
        to_tag="totag1",
        source_ip="192.0.2.10",
        failed=True,
    )
    assert plan(challenged).cdr is None


def test_cdr_merge_is_order_independent() -> None:
    events = call_events("answered", "c3", T0, ring=3.0, talk=42.0)
    events.append(
        events_pb2.Envelope(
            id="d1",
            time=T0 + 0.5,
            dialog=events_pb2.DialogEvent(
                state=events_pb2.DialogEvent.STATE_EARLY, call_id="c3", to_tag="totag1"
            ),
        )
    )
    results = {repr(fold(list(order))) for order in itertools.permutations(events)}
    assert len(results) == 1
    cdr = fold(events)
    assert cdr is not None
    assert cdr.duration == 42.0
    assert cdr.start_time == T0


def test_timeout_close_and_late_bye_replaces_it() -> None:
    invite, bye = call_events("answered", "c4", T0, ring=1.0, talk=100.0)
    open_cdr = fold([invite])
    assert open_cdr is not None
    assert open_cdr.open
    closed = close_by_timeout(open_cdr, 3600)
    assert (closed.end_time, closed.end_reason, closed.duration) == (T0 + 1 + 3600, "timeout", 3600)
    update = plan(bye).cdr
    assert update is not None
    fixed = merge_cdr(closed, update)
    assert (fixed.end_reason, fixed.duration) == ("bye", 100.0)
    # ... and a timeout after the BYE changes nothing.
    assert close_by_timeout(fixed, 3600) == fixed


def test_answer_beats_a_failure_of_another_transaction() -> None:
    (invite,) = call_events("answered", "c5", T0)[:1]
    reinvite_failure = CdrUpdate(
        call_id="c5", seen_at=T0 + 10, status=491, end_time=T0 + 10, end_reason="failed"
    )
    a = merge_cdr(fold([invite]), reinvite_failure)
    b_update = plan(invite).cdr
    assert b_update is not None
    b = merge_cdr(merge_cdr(None, reinvite_failure), b_update)
    assert a == b
    assert (a.status, a.end_time, a.end_reason) == (200, None, "")


def test_dialog_events_make_a_cdr() -> None:
    State = events_pb2.DialogEvent

    def dlg(state: events_pb2.DialogEvent.State.ValueType, at: float, **kw: Any) -> Envelope:
        event = events_pb2.DialogEvent(state=state, call_id="dc", **kw)
        return Envelope(id=f"d{state}", time=at, dialog=event)

    events = [
        dlg(
            State.STATE_START,
            T0,
            from_tag="ft",
            caller="<sip:carol@example.org;transport=tcp>",
            callee="sip:dave@example.org:5061",
            caller_address=common_pb2.Address(host="203.0.113.5", port=5060),
            ruri="sip:dave@10.0.0.7",
        ),
        dlg(State.STATE_ANSWER, T0 + 4, to_tag="tt", status=200),
        dlg(State.STATE_END, T0 + 64, reason="media-timeout no RTP"),
    ]
    cdr = fold(events)
    assert cdr == Cdr(
        call_id="dc",
        start_time=T0,
        from_tag="ft",
        to_tag="tt",
        caller="carol@example.org",
        callee="dave@example.org",
        src_ip="203.0.113.5",
        dst_uri="sip:dave@10.0.0.7",
        answer_time=T0 + 4,
        end_time=T0 + 64,
        status=200,
        end_reason="media-timeout",
    )
    failed = fold(
        [dlg(State.STATE_START, T0), dlg(State.STATE_END, T0 + 3, reason="failure", status=486)]
    )
    assert failed is not None
    assert (failed.status, failed.end_reason) == (486, "busy")


def test_helpers() -> None:
    assert split_uri("sip:alice@[2001:db8::1]:5060;transport=udp") == ("alice", "[2001:db8::1]")
    assert split_uri("tel:+15551234") == ("", "+15551234")
    assert [end_reason_for_status(s) for s in (487, 486, 600, 603, 480, 408, 500)] == [
        "cancel",
        "busy",
        "busy",
        "declined",
        "unanswered",
        "unanswered",
        "failed",
    ]
    env = events_pb2.Envelope(id="x" * 200)
    key = event_key(env, "seq")
    assert key.startswith("sha256:")
    assert len(key) <= 128
    assert event_key(events_pb2.Envelope(), "subj#7") == "subj#7"
