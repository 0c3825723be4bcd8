"""Event builders for tests and benchmarks: the events the edge publishes for a call.

``call_events`` gives the TransactionEvents of one call as the edge publishes them
under the default routing script's flags (INVITE: acc + missed, in-dialog BYE: acc +
failed). Timestamps are put on a monotonic clock ``mono_offset`` seconds behind the
wall clock, as the edge stamps them, with the envelope time on the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2

#: Final INVITE status of each outcome.
OUTCOME_STATUS = {
    "answered": (200, "OK"),
    "busy": (486, "Busy Here"),
    "cancelled": (487, "Request Terminated"),
    "unanswered": (408, "Request Timeout"),
}


@dataclass(frozen=True)
class Party:
    user: str = "alice"
    domain: str = "example.com"
    tag: str = "fromtag1"
    ip: str = "192.0.2.10"


def transaction_event(
    method: str,
    *,
    call_id: str,
    status: int,
    reason: str,
    started: float,
    finished: float,
    caller: Party,
    callee: Party,
    from_tag: str,
    to_tag: str,
    source_ip: str,
    acc: bool = True,
    missed: bool = False,
    failed: bool = False,
    dst_uri: str = "",
    cseq: int = 1,
    mono_offset: float = 0.0,
    event_id: str = "",
    edge_id: str = "edge-1",
) -> events_pb2.Envelope:
    """One finished transaction as services/edge/replies.transaction_event builds it."""
    from_user, from_domain = (caller.user, caller.domain)
    to_user, to_domain = (callee.user, callee.domain)
    if method != "INVITE" and from_tag == callee.tag:
        # An in-dialog request from the callee: From/To are swapped (RFC 3261 §12.2.1.1).
        from_user, from_domain, to_user, to_domain = to_user, to_domain, from_user, from_domain
    tx_id = f"z9hG4bK-{call_id}-{method}-{cseq}"
    tx = events_pb2.TransactionEvent(
        method=method,
        status=status,
        reason=reason,
        started_at=started - mono_offset,
        provisional_at=0.0,
        finished_at=finished - mono_offset,
        source=common_pb2.Address(transport=common_pb2.TRANSPORT_UDP, host=source_ip, port=5060),
        call_id=call_id,
        from_tag=from_tag,
        to_tag=to_tag,
        from_user=from_user,
        from_domain=from_domain,
        to_user=to_user,
        to_domain=to_domain,
        ruri=f"sip:{to_user}@{to_domain}",
        dst_uri=dst_uri,
        cseq=cseq,
        acc=acc,
        missed=missed,
        failed=failed,
        edge_id=edge_id,
        transaction_id=tx_id,
    )
    return events_pb2.Envelope(
        id=event_id or f"{edge_id}:{tx_id}",
        time=finished,
        instance=edge_id,
        service="edge",
        transaction=tx,
    )


def call_events(
    outcome: str,
    call_id: str,
    t0: float,
    *,
    ring: float = 2.0,
    talk: float = 30.0,
    caller: Party | None = None,
    callee: Party | None = None,
    hangup_by: str = "caller",
    mono_offset: float = 0.0,
) -> list[events_pb2.Envelope]:
    """The events of one call: INVITE (and for an answered call a BYE ``talk`` s later)."""
    caller = caller or Party()
    callee = callee or Party("bob", "example.com", "totag1", "192.0.2.20")
    status, reason = OUTCOME_STATUS[outcome]
    invite = transaction_event(
        "INVITE",
        call_id=call_id,
        status=status,
        reason=reason,
        started=t0,
        finished=t0 + ring,
        caller=caller,
        callee=callee,
        from_tag=caller.tag,
        to_tag=callee.tag,
        source_ip=caller.ip,
        acc=True,
        missed=True,
        dst_uri=f"sip:{callee.user}@{callee.ip}:5060",
        mono_offset=mono_offset,
    )
    if outcome != "answered":
        return [invite]
    by = caller if hangup_by == "caller" else callee
    other = callee if by is caller else caller
    bye_at = t0 + ring + talk
    bye = transaction_event(
        "BYE",
        call_id=call_id,
        status=200,
        reason="OK",
        started=bye_at,
        finished=bye_at + 0.05,
        caller=caller,
        callee=callee,
        from_tag=by.tag,
        to_tag=other.tag,
        source_ip=by.ip,
        acc=True,
        failed=True,
        dst_uri=f"sip:{other.user}@{other.ip}:5060",
        cseq=2,
        mono_offset=mono_offset,
    )
    return [invite, bye]
