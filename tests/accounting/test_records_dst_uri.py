"""cdrs.dst_uri names the branch that answered, whatever order the events come in.

Found end to end (tests/e2e/test_accounting_calls.py, PostgreSQL + NATS): the dialog
start (R-URI as received) and the INVITE transaction (R-URI of the winning branch)
were both "origin" updates, so the one processed last set dst_uri.
"""

from __future__ import annotations

import itertools

from sipmesh.accounting.records import Cdr, merge_cdr, plan
from sipmesh.accounting.testing import Party, transaction_event
from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2

T0 = 1_700_000_000.0
ALICE = Party()
BOB = Party("bob", "example.com", "totag1", "192.0.2.20")
CONTACT = "sip:bob@192.0.2.20:5062;transport=udp"


def events() -> list[events_pb2.Envelope]:
    start = events_pb2.DialogEvent(
        state=events_pb2.DialogEvent.STATE_START,
        call_id="c1",
        from_tag="ft",
        caller="sip:alice@example.com",
        callee="sip:bob@example.com",
        caller_address=common_pb2.Address(host="192.0.2.10", port=5060),
        ruri="sip:bob@example.com",
    )
    busy = transaction_event(
        "INVITE",
        call_id="c1",
        status=486,
        reason="Busy Here",
        started=T0,
        finished=T0 + 1,
        caller=ALICE,
        callee=BOB,
        from_tag="ft",
        to_tag="totag1",
        source_ip="192.0.2.10",
        missed=True,
        dst_uri=CONTACT,
    )
    return [events_pb2.Envelope(id="d1", time=T0, dialog=start), busy]


def test_dst_uri_is_the_winning_branch_in_any_order() -> None:
    results: list[Cdr] = []
    for order in itertools.permutations(events()):
        cdr: Cdr | None = None
        for envelope in order:
            update = plan(envelope).cdr
            assert update is not None
            cdr = merge_cdr(cdr, update)
        assert cdr is not None
        results.append(cdr)
    assert results[0] == results[1]
    assert results[0].dst_uri == CONTACT
    assert (results[0].status, results[0].end_reason) == (486, "busy")


def test_dialog_ruri_fills_dst_uri_when_no_branch_answered() -> None:
    start = events()[0]
    update = plan(start).cdr
    assert update is not None
    assert merge_cdr(None, update).dst_uri == "sip:bob@example.com"
