"""Errors raised by the SIP parser.

RFC 3261 §8.2 and §16.3: a request that cannot be understood gets a 4xx/5xx answer
when enough of it was readable to build one, otherwise it is dropped. ParseError
carries the status the edge should answer with and, when possible, the part of the
request needed to build that answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipmesh.sip.message import Request


class ParseError(Exception):
    """Input that is not a valid SIP message (or not an answerable one).

    ``status_hint`` is the status to answer with (400 Bad Request, 505 Version Not
    Supported, 413 Message Too Large, 416 Unsupported URI Scheme ...). ``partial``
    holds the start line and the headers needed to answer (Via, From, To, Call-ID,
    CSeq) when they were readable; it is ``None`` for responses and unreadable input.
    """

    def __init__(self, reason: str, status_hint: int = 400, partial: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint
        self.partial = partial

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, status_hint={self.status_hint})"
