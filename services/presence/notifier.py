"""In-dialog NOTIFY requests (RFC 6665 §4.2.1, RFC 3261 §12.2.1.1) and their sending.

The NOTIFY is built from the stored dialog: Request-URI = the subscriber's Contact
(remote target), Route = the SUBSCRIBE's Record-Route in order (UAS route set,
§12.1.1), From/To = the SUBSCRIBE's To/From with the dialog's tags, our own CSeq
space. It carries one Via of the presence server: the edge that sends it parses it as a
complete request (RFC 3261 §8.1.1: Via is mandatory) and puts its own Via on top,
as a proxy would, so the response returns to that edge's client transaction.

It is handed to the edge that owns the watcher's flow (RFC 5626 §5.3: the only way
through a NAT or over the watcher's TCP/TLS/WS connection), which reports the
transaction's outcome. RFC 6665 §4.2.2: a 481, a timeout (408 / Timer F) or a
failing flow ends the subscription. When that edge no longer owns the flow (or is
gone), the NOTIFY goes through any edge along the route set / Contact instead.
"""

from __future__ import annotations

import enum
import logging
import secrets

from sipmesh.clients.errors import ServiceError
from sipmesh.clients.interfaces import EdgeClient
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2
from sipmesh.presence.model import Subscription, presentity_uri
from sipmesh.sip import Request

log = logging.getLogger("sipmesh.presence")

_Outcome = edge_pb2.SendResult
# Statuses after which the subscription is gone at the subscriber (RFC 6665 §4.2.2).
_TERMINATING = {481, 408}


class SendOutcome(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    TERMINATE = "terminate"  # 481, timeout, flow failure: the subscription ends
    FAILED = "failed"  # some other failure; the subscription stays


def build_notify(
    sub: Subscription,
    *,
    state: str,
    expires: int = 0,
    reason: str = "",
    body: bytes | None = None,
    content_type: str = "",
    user_agent: str = "",
) -> Request:
    """The next NOTIFY of ``sub``; the caller has already incremented local_cseq."""
    if state == "terminated":
        sub_state = "terminated" + (f";reason={reason}" if reason else "")
    else:
        sub_state = f"{state};expires={max(expires, 0)}"
    headers: list[tuple[str, str]] = [("Via", presence_via(sub.local_contact))]
    headers += [("Route", r) for r in sub.route_set]
    local = presentity_uri(sub.to_user, sub.to_domain)
    remote = presentity_uri(sub.from_user, sub.from_domain)
    headers += [
        ("Max-Forwards", "70"),
        ("From", f"<{local}>;tag={sub.to_tag}"),
        ("To", f"<{remote}>;tag={sub.from_tag}"),
        ("Call-ID", sub.callid),
        ("CSeq", f"{sub.local_cseq} NOTIFY"),
        ("Contact", f"<{sub.local_contact}>"),
        ("Event", sub.event + (f";id={sub.event_id}" if sub.event_id else "")),
        ("Subscription-State", sub_state),
    ]
    if user_agent:
        headers.append(("User-Agent", user_agent))
    payload = body or b""
    if payload:
        headers.append(("Content-Type", content_type))
    headers.append(("Content-Length", str(len(payload))))
    return Request("NOTIFY", sub.contact, headers, payload)


def presence_via(local_contact: str) -> str:
    """The presence server's own Via, below the sending edge's (a fresh branch)."""
    hostport = local_contact.split(":", 1)[-1].split(";", 1)[0].split("@")[-1] or "invalid"
    return f"SIP/2.0/UDP {hostport};branch=z9hG4bK{secrets.token_hex(8)}"


class Notifier:
    def __init__(self, edge: EdgeClient | None, timeout_ms: int = 0) -> None:
        self.edge = edge
        self._timeout_ms = timeout_ms

    def outbound(self, sub: Subscription, request: Request) -> common_pb2.OutboundRequest:
        out = common_pb2.OutboundRequest(
            kind=common_pb2.OutboundRequest.KIND_REQUEST,
            raw=bytes(request),
            timeout_ms=self._timeout_ms,
        )
        flow = sub.flow
        if flow.edge_id:
            out.edge_id = flow.edge_id
            out.flow_id = flow.flow_id
            out.flow_token = flow.flow_token
            if flow.flow_id and flow.host:
                out.destination.CopyFrom(
                    common_pb2.Address(
                        transport=flow.transport,  # type: ignore[arg-type]
                        host=flow.host,
                        port=flow.port,
                    )
                )
        return out

    async def send(self, sub: Subscription, request: Request) -> SendOutcome:
        edge = self.edge
        if edge is None:
            log.debug("NOTIFY for %s not sent: no edge client", sub.key)
            return SendOutcome.FAILED
        out = self.outbound(sub, request)
        # Transaction timeout plus a margin for the call itself.
        call_timeout = (self._timeout_ms or 32000) / 1000 + 2.0
        try:
            result = await edge.send(out, timeout=call_timeout)
        except ServiceError as exc:
            if not out.edge_id:
                log.debug("NOTIFY for %s: edge unavailable: %s", sub.key, exc)
                return SendOutcome.FAILED
            result = _Outcome(outcome=_Outcome.OUTCOME_NO_FLOW, detail=str(exc))
        if result.outcome == _Outcome.OUTCOME_NO_FLOW and out.edge_id:
            # The owning edge lost the flow (or is gone): any edge, by route set/Contact.
            plain = common_pb2.OutboundRequest(
                kind=out.kind, raw=out.raw, timeout_ms=out.timeout_ms
            )
            try:
                result = await edge.send(plain, timeout=call_timeout)
            except ServiceError as exc:
                log.debug("NOTIFY for %s: no edge: %s", sub.key, exc)
                return SendOutcome.FAILED
        return classify(result)


def classify(result: edge_pb2.SendResult) -> SendOutcome:
    if result.outcome == _Outcome.OUTCOME_RESPONSE:
        if 200 <= result.status < 300:
            return SendOutcome.DELIVERED
        if result.status in _TERMINATING:
            return SendOutcome.TERMINATE
        return SendOutcome.FAILED
    if result.outcome == _Outcome.OUTCOME_SENT:
        return SendOutcome.DELIVERED
    if result.outcome in (_Outcome.OUTCOME_TIMEOUT, _Outcome.OUTCOME_TRANSPORT_ERROR):
        return SendOutcome.TERMINATE
    return SendOutcome.FAILED
