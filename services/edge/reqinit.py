"""Initial request checks: the REQINIT route of Kamailio's default kamailio.cfg.

What runs here, in kamailio.cfg's order, before any routing decision:

1. scanners (User-Agent matching a configurable list) are dropped silently, so
   they learn nothing (kamailio.cfg: "silent drop for scanners");
2. Max-Forwards (RFC 3261 §16.3 item 3, mf_process_maxfwd_header): 0 -> 483 Too
   Many Hops, except for an OPTIONS addressed to the server itself, which §16.3
   lets the proxy answer as the final recipient (§11);
3. OPTIONS to the server itself (no user part, host one of ours) -> 200 with
   Allow/Accept/Supported (RFC 3261 §11.2; kamailio.cfg "200 Keepalive");
4. sanity_check: unsupported Request-URI scheme -> 416 (RFC 3261 §8.2.2.1),
   Proxy-Require with an option tag we do not know -> 420 with Unsupported
   (§8.2.2.3, §20.29). The parser already enforced the rest of sanity's list
   (required headers, CSeq method = request method, Content-Length not beyond
   the body, SIP version) and said so through ParseError.

Nothing here does I/O; the edge feeds parsed requests in and executes the verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sipmesh.sip import ParseError, Request, SipURI
from sipmesh.sip.stateless import reason_phrase
from sipmesh.sip.uri import TelURI

__all__ = [
    "ALLOW",
    "Answer",
    "Drop",
    "ReqInit",
    "Verdict",
    "looks_like_sip",
]

# Methods the platform handles (the Allow of an OPTIONS answer, RFC 3261 §20.5).
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, MESSAGE, INFO, UPDATE, REFER, PRACK"  # noqa: E501
SUPPORTED = "path, outbound"
ACCEPT = "application/sdp"


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer statelessly with this status (sl_send_reply)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Drop:
    """Discard silently; ``reason`` labels the drop_requests statistic."""

    reason: str


Verdict = Answer | Drop | None


def looks_like_sip(data: bytes) -> bool:
    """Cheap test of the first line: a SIP request line or status line (RFC 3261 §7.1/§7.2).

    Datagrams that are not SIP at all (STUN, HTTP probes, random bytes) are dropped
    without a parse attempt and without an answer. CRLF keep-alives never get here:
    the transports consume them (RFC 5626 §3.5.1).
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\n", start, start + 1024)
    if end < 0:
        return False
    line = data[start:end].rstrip(b"\r")
    if line[:4].upper() == b"SIP/":
        return len(line) >= 11 and line[7:8] == b" "
    # Split on any run of whitespace: a request line with extra spaces (RFC 4475
    # §3.1.2.8-10 lwsruri, lwsstart, trws) is still SIP and deserves its 400.
    parts = line.split()
    return len(parts) >= 3 and parts[-1][:4].upper() == b"SIP/" and parts[0].isalpha()


class ReqInit:
    """The checks, configured once; ``check`` runs per request."""

    def __init__(
        self,
        *,
        is_myself: Callable[[str, int | None], bool],
        scanners: Sequence[str] = (),
        proxy_require_supported: Iterable[str] = (),
    ) -> None:
        self._is_myself = is_myself
        self._scanners = tuple(s.lower() for s in scanners if s)
        self._supported = frozenset(t.lower() for t in proxy_require_supported)

    def is_scanner(self, user_agent: str | None) -> bool:
        if not user_agent or not self._scanners:
            return False
        ua = user_agent.lower()
        return any(s in ua for s in self._scanners)

    def for_server(self, request: Request) -> bool:
        """R-URI without a user part whose host:port is this server (Kamailio's myself)."""
        try:
            ruri = request.ruri
        except ParseError:
            return False
        return isinstance(ruri, SipURI) and not ruri.user and self._is_myself(ruri.host, ruri.port)

    def check(self, request: Request) -> Verdict:
        method = request.method
        if self.is_scanner(request.user_agent):
            return Drop("scanner")
        try:
            max_forwards = request.max_forwards
        except ParseError:
            return _answer_unless_ack(method, 400, "Bad Max-Forwards")
        options_here = method == "OPTIONS" and self.for_server(request)
        if max_forwards == 0 and not options_here:
            return _answer_unless_ack(method, 483, "Too Many Hops")
        if options_here:
            return Answer(
                200,
                "Keepalive",
                (("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", SUPPORTED)),
            )
        try:
            ruri = request.ruri
        except ParseError:
            return _answer_unless_ack(method, 400, "Bad Request-URI")
        if not isinstance(ruri, SipURI | TelURI):
            return _answer_unless_ack(method, 416, "Unsupported URI Scheme")
        if method not in ("ACK", "CANCEL"):
            # RFC 3261 §8.2.2.3 / §16.3 item 6: CANCEL and ACK carry no Proxy-Require
            # check (their answer could not be matched anyway).
            unknown = [t for t in request.tokens("proxy-require") if t not in self._supported]
            if unknown:
                return Answer(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
        return None

    @staticmethod
    def parse_failure(error: ParseError) -> Verdict:
        """What to do with input that did not parse: answer if possible, else drop.

        RFC 3261 §8.2 / §16.3: a request that can be answered (the parser kept Via,
        From, To, Call-ID and CSeq in ``partial``) gets the error's status; an ACK
        is never answered (§17.2.1); everything else is dropped.
        """
        partial = error.partial
        if partial is None or partial.method == "ACK":
            return Drop("malformed")
        status = error.status_hint
        return Answer(status, reason_phrase(status), (("Warning", _warning(error)),))


def _answer_unless_ack(method: str, status: int, reason: str) -> Verdict:
    return Drop("bad-ack") if method == "ACK" else Answer(status, reason)


def _warning(error: ParseError) -> str:
    # RFC 3261 §20.43: warn-code 399 (miscellaneous) tells the client what was wrong;
    # quoted-string contents are kept printable and free of quotes and backslashes.
    text = "".join(c if c.isprintable() and c not in '"\\' else "?" for c in error.reason)
    return f'399 sipmesh "{text[:100]}"'
