"""Ending a callee's half of a call the edge will not let through.

When the callee answered 2xx but the edge cannot carry the call on (the media relay
failed to take the answer), the caller gets a 5xx instead of the 2xx, and the
callee's confirmed dialog must not be left open: the edge, as the dialog module's
``dlg_end_dlg`` does, acknowledges the 2xx (RFC 3261 §13.2.2.4, so the callee stops
retransmitting it) and sends a BYE (§15.1.1), both within the callee's dialog:
Request-URI the 2xx's Contact, the caller's From, the 2xx's To (with the callee's
tag), the Call-ID, and as Route the Record-Route entries between this edge and the
callee (those above our own entry, in reverse order, §12.1.2).
"""

from __future__ import annotations

from collections.abc import Callable

from sipmesh.sip import ParseError, Request, Response, SipURI

__all__ = ["callee_ack_and_bye"]


def _route_set(ok: Response, is_myself: Callable[[str, int | None], bool]) -> list[str]:
    above: list[str] = []
    try:
        entries = list(zip(ok.get_all("Record-Route"), ok.record_routes, strict=False))
    except ParseError:
        return above
    for value, addr in entries:
        uri = addr.uri
        if isinstance(uri, SipURI) and is_myself(uri.host, uri.port):
            break
        above.append(value)
    return list(reversed(above))


def callee_ack_and_bye(
    invite: Request, ok: Response, is_myself: Callable[[str, int | None], bool]
) -> tuple[Request, Request]:
    """The ACK for ``ok`` (a 2xx to ``invite``, the INVITE as this edge sent it) and
    the BYE that ends the callee's dialog; neither has a Via yet."""
    try:
        contacts = ok.contacts
    except ParseError:
        contacts = []
    target = str(contacts[0].uri) if contacts and not contacts[0].is_star else invite.uri
    routes = _route_set(ok, is_myself)
    seq = invite.cseq.seq

    def build(method: str, cseq: int) -> Request:
        headers: list[tuple[str, str]] = [("Route", r) for r in routes]
        headers.append(("From", invite.get("From") or ""))
        headers.append(("To", ok.get("To") or invite.get("To") or ""))
        headers.append(("Call-ID", invite.get("Call-ID") or ""))
        headers.append(("CSeq", f"{cseq} {method}"))
        headers.append(("Max-Forwards", "70"))
        if method == "BYE":
            headers.append(("Reason", 'SIP;cause=500;text="media relay failure"'))
        headers.append(("Content-Length", "0"))
        return Request(method, target, headers)

    # §13.2.2.4: the ACK has the CSeq number of the INVITE; the BYE the next one.
    return build("ACK", seq), build("BYE", seq + 1)
