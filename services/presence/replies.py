"""Small helpers shared by the request handlers: responses and header checks."""

from __future__ import annotations

from collections.abc import Iterable

from sipmesh.gen.sipmesh.v1 import common_pb2, presence_pb2, registrar_pb2
from sipmesh.sip import Request
from sipmesh.sip.stateless import make_response


class Reject(Exception):
    """Answer the request with ``status`` (and extra headers) and stop."""

    def __init__(
        self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        super().__init__(f"{status} {reason or ''}")
        self.status = status
        self.reason = reason
        self.headers = list(headers)


def reply(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    headers: Iterable[tuple[str, str]] = (),
    to_tag: str | None = None,
    body: bytes = b"",
) -> presence_pb2.HandleReply:
    response = make_response(request, status, reason, to_tag=to_tag, headers=headers, body=body)
    return presence_pb2.HandleReply(
        response=registrar_pb2.SipResponse(
            code=response.status,
            reason=response.reason,
            headers=[common_pb2.Header(name=n, value=v) for n, v in response.headers],
            raw=bytes(response),
        )
    )


def parse_expires(request: Request, default: int) -> int:
    """The Expires header as delta-seconds, ``default`` when absent; 400 when not a
    number (RFC 3261 §20.19: delta-seconds = 1*DIGIT)."""
    value = request.get("Expires")
    if value is None:
        return default
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise Reject(400, "Bad Expires")
    return min(int(text), 2**32 - 1)


def check_interval(expires: int, minimum: int, maximum: int) -> int:
    """RFC 3903 §6 step 3 / RFC 6665 §4.2.1.1: too brief -> 423 with Min-Expires;
    too long -> cut down to the maximum."""
    if 0 < expires < minimum:
        raise Reject(423, "Interval Too Brief", [("Min-Expires", str(minimum))])
    return min(expires, maximum)


def event_package(request: Request) -> tuple[str, str]:
    """(package, id param) of the Event header, lower-cased package ("" if absent)."""
    value = request.get("Event") or ""
    parts = [p.strip() for p in value.split(";")]
    package = parts[0].lower()
    event_id = ""
    for param in parts[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "id":
            event_id = val.strip()
    return package, event_id
