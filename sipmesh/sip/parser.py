"""Parse one SIP message from bytes (RFC 3261 §7, §18.3).

Only the start line and the header lines are split here (folding undone, compact
names mapped); header values are parsed lazily by the message accessors, except
the few that decide whether a request can be answered at all (RFC 3261 §8.2,
§16.3): the top Via, CSeq (and its method), From/To, Max-Forwards, the
Request-URI and Content-Length. Anything wrong raises ParseError with the status
to answer with and, for requests, the headers needed to build that answer.
"""

from __future__ import annotations

import re
from typing import Final

from sipmesh.sip.errors import ParseError
from sipmesh.sip.headers import KNOWN_KEYS, TOKEN_RE, header_key
from sipmesh.sip.message import Request, Response, _Entry
from sipmesh.sip.uri import SipURI

_VERSION_RE: Final = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
# The headers a response to a request copies (RFC 3261 §8.2.6.2).
_ANSWER_KEYS: Final = frozenset({"via", "from", "to", "call-id", "cseq"})
_REQUIRED: Final = ("via", "from", "to", "call-id", "cseq")
# Methods of RFC 3261 and its extensions (3262, 3265/6665, 3311, 3428, 3515, 3903,
# 6086): a CSeq mismatch on any other method is answered 501 (RFC 4475 §3.1.2.18).
KNOWN_METHODS: Final = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
        "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip


def parse_message(
    data: bytes, *, max_size: int | None = None, lazy: bool = False
) -> Request | Response:
    """Parse one datagram (UDP, or one framed stream message) into a message.

    Never raises anything but ParseError. Bytes after Content-Length are ignored
    (RFC 3261 §18.3); without Content-Length the rest of the datagram is the body.

    ``lazy=True`` is the hot path: the structural split plus what identifies the
    transaction (top Via, CSeq and its method, Call-ID, RFC 3261 §17.2.3), about a
    third of the eager cost. From, To, Max-Forwards and the Request-URI are then
    checked on first access, or all at once by :func:`validate_request`, which the
    edge calls before it routes a request; services that receive a message the
    edge already validated parse it lazily.
    """
    try:
        return parse_message_strict(data, max_size=max_size, lazy=lazy)
    except ParseError:
        raise
    except Exception as exc:  # defence in depth: the edge must never crash on input
        raise ParseError(f"malformed message: {type(exc).__name__}") from exc


def parse_message_strict(
    data: bytes, *, max_size: int | None = None, stream: bool = False, lazy: bool = False
) -> Request | Response:
    """parse_message without the safety net (the property tests call this one).

    With ``stream=True`` a missing Content-Length is an error (RFC 3261 §18.3:
    it is mandatory on stream transports) and the body must be complete.
    """
    if max_size is not None and len(data) > max_size:
        raise ParseError("message too large", 413)
    start = 0
    while data.startswith(b"\r\n", start):
        # RFC 3261 §7.5: CRLFs before the start line are ignored.
        start += 2
    end = data.find(b"\r\n\r\n", start)
    lf_end = data.find(b"\n\n", start, end if end >= 0 else len(data))
    if lf_end >= 0 and (end < 0 or lf_end < end):
        head_end, body_start = lf_end, lf_end + 2
    elif end >= 0:
        head_end, body_start = end, end + 4
    else:
        raise ParseError("no empty line after the header section")
    head = data[start:head_end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    if head.count("\n") != len(lines) - 1:
        # Bare LF line ends: tolerated, as most stacks do.
        lines = [line.rstrip("\r") for line in head.split("\n")]
    first = lines[0]
    if not first:
        raise ParseError("empty start line")
    folded = "\n " in head or "\n\t" in head
    entries = _split_headers(lines) if folded else _split_unfolded(lines)
    if first[:4].upper() == "SIP/":
        msg: Request | Response = _response(first, entries)
    else:
        msg = _request(first, entries, lazy)
    msg._body = _body(msg, entries, data, body_start, stream)
    msg._raw = data if start == 0 and body_start + len(msg._body) == len(data) else None
    return msg


def _split_unfolded(lines: list[str]) -> list[_Entry]:
    """_split_headers for the common case of no folded lines (the hot path)."""
    known = KNOWN_KEYS
    entries: list[_Entry] = []
    append = entries.append
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(":")
        key = known.get(name)
        if key is None:
            if not colon:
                raise ParseError(f"header line without a colon: {lines[i][:60]!r}")
            name = name.rstrip(" \t")
            if not TOKEN_RE.fullmatch(name):
                raise ParseError(f"bad header name {name[:60]!r}")
            key = header_key(name)
        elif not colon:
            raise ParseError(f"header line without a colon: {lines[i][:60]!r}")
        append((key, name, value.strip(" \t")))
    return entries


def _split_headers(lines: list[str]) -> list[_Entry]:
    entries: list[_Entry] = []
    known = KNOWN_KEYS
    for i in range(1, len(lines)):
        line = lines[i]
        if not line:
            raise ParseError("empty header line")
        if line[0] == " " or line[0] == "\t":
            # RFC 3261 §7.3.1: a line starting with whitespace continues the previous
            # header; the fold is replaced by a single space.
            if not entries:
                raise ParseError("continuation line before any header")
            prev_key, prev_name, value = entries[-1]
            more = line.strip(" \t")
            joined = f"{value} {more}" if value and more else value + more
            entries[-1] = (prev_key, prev_name, joined)
            continue
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"header line without a name and colon: {line[:60]!r}")
        name = line[:colon]
        key = known.get(name)
        if key is None:
            name = name.rstrip(" \t")
            if not TOKEN_RE.fullmatch(name):
                raise ParseError(f"bad header name {name[:60]!r}")
            key = header_key(name)
        entries.append((key, name, line[colon + 1 :].strip(" \t")))
    return entries


def _request(first: str, entries: list[_Entry], lazy: bool = False) -> Request:
    parts = first.split(" ")
    if len(parts) != 3 or not all(parts):
        # RFC 3261 §7.1: Method SP Request-URI SP SIP-Version, single spaces, no LWS
        # inside the URI (RFC 4475 §3.1.2.8-10: lwsruri, lwsstart, trws). The headers
        # are readable, so the 400 can still be answered.
        words = first.split()
        partial = None
        if len(words) >= 3:
            guess = Request(words[0], " ".join(words[1:-1]), version=words[-1])
            guess._hdrs = entries
            partial = _partial(guess)
        raise ParseError(f"malformed request line: {first[:80]!r}", 400, partial)
    method, uri, version = parts
    if not TOKEN_RE.fullmatch(method):
        raise ParseError(f"bad method {method[:40]!r}")
    if not _VERSION_RE.fullmatch(version):
        raise ParseError(f"bad SIP version {version[:40]!r}")
    req = Request.__new__(Request)
    req._hdrs = entries
    req._cache = {}
    req._method = method
    req._uri = uri
    req._ruri = None
    req._version = version
    req._raw = None
    req._body = b""
    try:
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            raise ParseError(f"unsupported SIP version {version!r}", 505)
        _check_counts(entries)
        if req.top_via is None:
            raise ParseError("missing Via header")
        cseq = req.cseq
        if cseq.method != method:
            # RFC 3261 §8.1.1.5. RFC 4475 §3.1.2.17 (mismatch01) expects 400; with an
            # unknown request method §3.1.2.18 (mismatch02) prefers 501.
            status = 400 if method in KNOWN_METHODS else 501
            raise ParseError(f"CSeq method {cseq.method!r} does not match {method!r}", status)
        if not lazy:
            _validate_rest(req)
    except ParseError as exc:
        if exc.partial is None:
            exc.partial = _partial(req)
        raise
    return req


def validate_request(req: Request) -> None:
    """The checks ``parse_message(lazy=True)`` left out, as the eager parse makes them.

    Raises ParseError (with the answerable part of the request, as the eager parse
    does) when From, To, Max-Forwards or the Request-URI is malformed. Idempotent
    and cheap once done: the parsed values stay cached on the message.
    """
    try:
        _validate_rest(req)
    except ParseError as exc:
        if exc.partial is None:
            exc.partial = _partial(req)
        raise
    except Exception as exc:  # same safety net as parse_message
        raise ParseError(f"malformed message: {type(exc).__name__}", 400, _partial(req)) from exc


def _validate_rest(req: Request) -> None:
    req.from_  # noqa: B018 - parse now: an unparseable From cannot be answered
    req.to  # noqa: B018
    req.max_forwards  # noqa: B018
    ruri = req.ruri
    if isinstance(ruri, SipURI) and ruri.headers:
        # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI
        # (RFC 4475 §3.1.2.11 escruri: rejecting with 400 is acceptable).
        raise ParseError("headers in the Request-URI")


def _check_counts(entries: list[_Entry]) -> None:
    """Each of Via/From/To/Call-ID/CSeq present; From/To/Call-ID/CSeq only once.

    RFC 3261 §8.1.1 (mandatory headers) and RFC 4475 §3.3.8 (multi01: a header that
    allows one value must not repeat). One pass over the header list.
    """
    counts = dict.fromkeys(_REQUIRED, 0)
    for key, _, _ in entries:
        if key in counts:
            counts[key] += 1
    for key, count in counts.items():
        if count == 0:
            raise ParseError(f"missing {key} header")
        if count > 1 and key != "via":
            raise ParseError(f"more than one {key} header")


def _partial(req: Request) -> Request | None:
    """The answerable part of a request, or None when an answer cannot be built.

    It keeps the start line and the Via, From, To, Call-ID and CSeq lines as
    received (RFC 3261 §8.2.6.2 copies them into the response). An answer needs at
    least a Via (where to send it) and a CSeq (to match it); the others are kept
    when present (RFC 4475 §3.3.1 insuf still deserves a 400). Their typed
    accessors may raise: the value that made the request bad can be among them.
    """
    kept = [e for e in req._hdrs if e[0] in _ANSWER_KEYS]
    present = {e[0] for e in kept}
    if "via" not in present or "cseq" not in present:
        return None
    part = Request(req.method, req.uri, version=req.version)
    part._hdrs = kept
    return part


def _response(first: str, entries: list[_Entry]) -> Response:
    parts = first.split(" ", 2)
    if len(parts) < 2:
        raise ParseError(f"malformed status line: {first[:80]!r}")
    version, code = parts[0], parts[1]
    reason = parts[2] if len(parts) == 3 else ""
    if not _VERSION_RE.fullmatch(version):
        raise ParseError(f"bad SIP version {version[:40]!r}")
    if version.upper() != "SIP/2.0":
        raise ParseError(f"unsupported SIP version {version!r}", 505)
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        # RFC 3261 §7.2 / §21: a three-digit code; RFC 4475 §3.1.2.19 bigcode.
        raise ParseError(f"bad status code {code[:20]!r}")
    resp = Response.__new__(Response)
    resp._hdrs = entries
    resp._cache = {}
    resp._status = int(code)
    resp._reason = reason
    resp._version = version
    resp._raw = None
    resp._body = b""
    _check_counts(entries)
    resp.top_via  # noqa: B018 - responses are routed by their top Via
    resp.cseq  # noqa: B018
    return resp


def _body(
    msg: Request | Response, entries: list[_Entry], data: bytes, body_start: int, stream: bool
) -> bytes:
    values = [v for k, _, v in entries if k == "content-length"]
    available = len(data) - body_start
    if not values:
        if stream:
            raise ParseError("missing Content-Length on a stream transport", 400, _partial_of(msg))
        return data[body_start:]
    if len(set(values)) > 1:
        # RFC 4475 §3.3.9 mcl01: conflicting Content-Length values.
        raise ParseError("conflicting Content-Length headers", 400, _partial_of(msg))
    value = values[0]
    if not value.isascii() or not value.isdigit():
        raise ParseError(f"bad Content-Length {value[:20]!r}", 400, _partial_of(msg))
    length = int(value)
    if length > available:
        # RFC 3261 §18.3: a datagram shorter than Content-Length is discarded or,
        # for a request, answered with 400 (RFC 4475 §3.1.2.2 clerr).
        raise ParseError("Content-Length larger than the message", 400, _partial_of(msg))
    return data[body_start : body_start + length]


def _partial_of(msg: Request | Response) -> Request | None:
    return _partial(msg) if isinstance(msg, Request) else None
