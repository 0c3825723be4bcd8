"""Responses a proxy sends upstream, and the transaction event that records them."""

from __future__ import annotations

from collections.abc import Iterable

from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2
from sipmesh.sip import ParseError, Request, Response, SipURI, parse_message
from sipmesh.sip.stateless import make_response

from .branches import Branch, ProxyTransaction

__all__ = [
    "aggregate_challenges",
    "apply_reply_edits",
    "copy_response",
    "has_upstream_via",
    "local_reply",
    "strip_own_via",
    "transaction_event",
]


def copy_response(response: Response) -> Response:
    parsed = parse_message(bytes(response), lazy=True)
    assert isinstance(parsed, Response)
    return parsed


def has_upstream_via(response: Response) -> bool:
    """§16.7 step 3: a Via is left once ours is removed (else the response was meant
    for this element and must not be forwarded)."""
    return len(response.get_all("Via")) > 1


def strip_own_via(response: Response) -> Response:
    """§16.7 step 3: the proxy removes its own (topmost) Via before forwarding."""
    out = copy_response(response)
    out.pop_first("Via")
    return out


def aggregate_challenges(best: Response, branches: list[Branch]) -> None:
    """§16.7 step 7: a 401/407 carries every challenge of every 401/407 branch."""
    if best.status not in (401, 407):
        return
    seen = set(best.get_all("WWW-Authenticate")) | set(best.get_all("Proxy-Authenticate"))
    for branch in branches:
        other = branch.response
        if other is None or other is best or other.status not in (401, 407):
            continue
        for name in ("WWW-Authenticate", "Proxy-Authenticate"):
            for value in other.get_instances(name):
                if value not in seen:
                    seen.add(value)
                    best.add(name, value)


def apply_reply_edits(response: Response, edits: Iterable[common_pb2.HeaderEdit]) -> None:
    """Header edits of reply_route on a reply (append_hf/remove_hf on $rs)."""
    op = common_pb2.HeaderEdit
    for edit in edits:
        if edit.op in (op.OP_REMOVE, op.OP_REPLACE):
            response.remove(edit.name)
        if edit.op in (op.OP_APPEND, op.OP_REPLACE):
            response.add(edit.name, edit.value)
        elif edit.op == op.OP_INSERT:
            response.add(edit.name, edit.value, first=True)


def local_reply(
    ptx: ProxyTransaction,
    status: int,
    reason: str | None,
    headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    return make_response(ptx.request, status, reason, to_tag=ptx.to_tag, headers=headers, body=body)


def _user_domain(request: Request, which: str) -> tuple[str, str, str]:
    try:
        addr = request.from_ if which == "from" else request.to
    except ParseError:
        return "", "", ""
    uri = addr.uri
    if isinstance(uri, SipURI):
        return uri.user or "", uri.host, addr.tag or ""
    return "", "", addr.tag or ""


def transaction_event(
    ptx: ProxyTransaction, response: Response, edge_id: str
) -> events_pb2.TransactionEvent:
    """What accounting and metrics consumers need about a finished transaction."""
    request = ptx.request
    from_user, from_domain, from_tag = _user_domain(request, "from")
    to_user, to_domain, _ = _user_domain(request, "to")
    try:
        to_tag = response.to.tag or ""
    except ParseError:
        to_tag = ""
    event = events_pb2.TransactionEvent(
        method=request.method,
        status=response.status,
        reason=response.reason,
        started_at=ptx.started_at,
        provisional_at=ptx.provisional_at,
        finished_at=ptx.finished_at,
        source=ptx.source_pb.remote,
        call_id=request.get("Call-ID") or "",
        from_tag=from_tag,
        to_tag=to_tag,
        from_user=from_user,
        from_domain=from_domain,
        to_user=to_user,
        to_domain=to_domain,
        ruri=request.uri,
        cseq=request.cseq.seq,
        acc=ptx.acc.acc,
        missed=ptx.acc.missed,
        failed=ptx.acc.failed,
        edge_id=edge_id,
        transaction_id=ptx.tx_id,
        authenticated_user=ptx.authenticated_user,
    )
    event.acc_extra.update(ptx.acc.extra)
    winner = ptx.winner
    if winner is not None:
        event.dst_uri = winner.request.uri
        event.destination.CopyFrom(
            common_pb2.Address(
                transport=_TRANSPORTS.get(winner.hop.transport, common_pb2.TRANSPORT_UDP),
                host=winner.hop.host,
                port=winner.hop.port,
            )
        )
    return event


_TRANSPORTS = {
    "udp": common_pb2.TRANSPORT_UDP,
    "tcp": common_pb2.TRANSPORT_TCP,
    "tls": common_pb2.TRANSPORT_TLS,
    "ws": common_pb2.TRANSPORT_WS,
    "wss": common_pb2.TRANSPORT_WSS,
    "sctp": common_pb2.TRANSPORT_SCTP,
}
