"""Messages built from other messages, without any state.

Responses to a request (RFC 3261 §8.2.6), received/rport on the top Via (RFC 3261
§18.2.1, RFC 3581 §4), CANCEL for a sent request (§9.1) and the ACK a client INVITE
transaction sends for a non-2xx final response (§17.1.1.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from sipmesh.sip.fields import Via
from sipmesh.sip.message import Request, Response
from sipmesh.sip.uri import NameAddr

__all__ = [
    "REASON_PHRASES",
    "apply_received",
    "make_ack",
    "make_cancel",
    "make_response",
    "reason_phrase",
    "stateless_to_tag",
]

# RFC 3261 §21 and later RFCs' registrations most seen in practice.
REASON_PHRASES: Mapping[int, str] = MappingProxyType(
    {
        100: "Trying",
        180: "Ringing",
        181: "Call Is Being Forwarded",
        182: "Queued",
        183: "Session Progress",
        199: "Early Dialog Terminated",
        200: "OK",
        202: "Accepted",
        204: "No Notification",
        300: "Multiple Choices",
        301: "Moved Permanently",
        302: "Moved Temporarily",
        305: "Use Proxy",
        380: "Alternative Service",
        400: "Bad Request",
        401: "Unauthorized",
        402: "Payment Required",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        406: "Not Acceptable",
        407: "Proxy Authentication Required",
        408: "Request Timeout",
        410: "Gone",
        412: "Conditional Request Failed",
        413: "Request Entity Too Large",
        414: "Request-URI Too Long",
        415: "Unsupported Media Type",
        416: "Unsupported URI Scheme",
        420: "Bad Extension",
        421: "Extension Required",
        423: "Interval Too Brief",
        429: "Provide Referrer Identity",
        430: "Flow Failed",
        439: "First Hop Lacks Outbound Support",
        440: "Max-Breadth Exceeded",
        469: "Bad Info Package",
        470: "Consent Needed",
        480: "Temporarily Unavailable",
        481: "Call/Transaction Does Not Exist",
        482: "Loop Detected",
        483: "Too Many Hops",
        484: "Address Incomplete",
        485: "Ambiguous",
        486: "Busy Here",
        487: "Request Terminated",
        488: "Not Acceptable Here",
        489: "Bad Event",
        491: "Request Pending",
        493: "Undecipherable",
        494: "Security Agreement Required",
        500: "Server Internal Error",
        501: "Not Implemented",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Server Time-out",
        505: "Version Not Supported",
        513: "Message Too Large",
        580: "Precondition Failure",
        600: "Busy Everywhere",
        603: "Decline",
        604: "Does Not Exist Anywhere",
        606: "Not Acceptable",
        607: "Unwanted",
    }
)


def reason_phrase(status: int) -> str:
    """The customary reason phrase, or a generic one for the class (RFC 3261 §21)."""
    if status in REASON_PHRASES:
        return REASON_PHRASES[status]
    return {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


def stateless_to_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of ``request``.

    A stateless server must answer a retransmitted request with the same tag (RFC 3261
    §8.2.6.2), so the tag is derived from the request's transaction identity, as
    Kamailio's sl module does, instead of being random.
    """
    top = request.top_via
    material = "\x00".join(
        [
            request.call_id,
            request.from_.tag or "",
            str(request.cseq.seq),
            (top.branch or "") if top is not None else "",
        ]
    )
    return hashlib.blake2s(material.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6.

    Copies every Via (in order), From, To, Call-ID and CSeq. A To tag is added to
    every response but 100 when the request's To has none (§8.2.6.2): ``to_tag`` if
    given, else :func:`stateless_to_tag`. 100 Trying copies Timestamp (§8.2.6.1).
    Extra ``headers`` come after the copied ones; Content-Length is set last.
    """
    out: list[tuple[str, str]] = [("Via", via) for via in request.get_all("Via")]
    from_value = request.get("From")
    if from_value is not None:
        out.append(("From", from_value))
    to_value = request.get("To")
    if to_value is not None:
        if status != 100 and request.to.tag is None:
            # Appending keeps the header as the UAC wrote it; a tag is a header param
            # for both the name-addr and the addr-spec form (§20.39).
            to_value = f"{to_value.rstrip()};tag={to_tag or stateless_to_tag(request)}"
        out.append(("To", to_value))
    for name in ("Call-ID", "CSeq"):
        value = request.get(name)
        if value is not None:
            out.append((name, value))
    if status == 100:
        timestamp = request.get("Timestamp")
        if timestamp is not None:
            out.append(("Timestamp", timestamp))
    out.extend(headers)
    out.append(("Content-Length", str(len(body))))
    return Response(status, reason or reason_phrase(status), out, body)


def apply_received(request: Request, source_host: str, source_port: int) -> bool:
    """Stamp the top Via with where the request really came from.

    RFC 3261 §18.2.1: add ``received`` when the sent-by host differs from the source
    address. RFC 3581 §4: if the Via has a bare ``rport``, fill it with the source port
    and add ``received`` even when the host matches. Returns True if the Via changed.
    """
    top_text = request.pop_first("Via")
    if top_text is None:
        return False
    via = Via.parse(top_text)
    changed = False
    bare_host = source_host.strip("[]")
    rport = via.rport
    if rport == "":
        via.params["rport"] = str(source_port)
        changed = True
    moved = via.host.strip("[]").lower() != bare_host.lower()
    if (moved or rport == "") and via.received != bare_host:
        via.params["received"] = bare_host
        changed = True
    request.add("Via", str(via) if changed else top_text, first=True)
    return changed


def _single_top_via(request: Request) -> str:
    vias = request.get_all("Via")
    if not vias:
        raise ValueError("request has no Via")
    return vias[0]


def make_cancel(request: Request) -> Request:
    """CANCEL for a request we sent (RFC 3261 §9.1).

    Same Request-URI, Call-ID, From, To and CSeq number as the request, method CANCEL,
    one Via equal to the request's top Via (so it follows the same branch and hop),
    and the request's Route headers.
    """
    headers: list[tuple[str, str]] = [("Via", _single_top_via(request))]
    for name in ("Route",):
        headers.extend((name, v) for v in request.get_all(name))
    headers.extend(_copy(request, ("From", "To", "Call-ID")))
    headers.append(("CSeq", f"{request.cseq.seq} CANCEL"))
    headers.append(("Max-Forwards", "70"))
    headers.append(("Content-Length", "0"))
    return Request("CANCEL", request.uri, headers)


def make_ack(request: Request, response: Response) -> Request:
    """ACK for a non-2xx final response to an INVITE (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and CSeq number of the INVITE; To of the response
    (it carries the tag); only the INVITE's top Via; the INVITE's Route headers.
    """
    if not 300 <= response.status <= 699:
        raise ValueError("the transaction layer only ACKs non-2xx final responses")
    headers: list[tuple[str, str]] = [("Via", _single_top_via(request))]
    headers.extend(("Route", v) for v in request.get_all("Route"))
    headers.extend(_copy(request, ("From",)))
    to_value = response.get("To")
    if to_value is None:
        to_value = str(NameAddr(request.to.uri, request.to.display_name, request.to.params))
    headers.append(("To", to_value))
    headers.extend(_copy(request, ("Call-ID",)))
    headers.append(("CSeq", f"{request.cseq.seq} ACK"))
    headers.append(("Max-Forwards", "70"))
    headers.append(("Content-Length", "0"))
    return Request("ACK", request.uri, headers)


def _copy(request: Request, names: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for name in names:
        value = request.get(name)
        if value is not None:
            out.append((name, value))
    return out
