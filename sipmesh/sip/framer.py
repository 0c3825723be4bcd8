"""Stream framing for SIP over TCP, TLS and WebSocket-less byte streams.

RFC 3261 §18.3: on a stream transport, Content-Length delimits each message, and
several messages may follow each other in one read (pipelining) or one message may
arrive in many reads. RFC 5626 §3.5.1: a client sends a CRLF CRLF "ping" as a
keep-alive and the server answers with a single CRLF "pong"; both appear between
messages and are reported as events, not parsed as messages.

The framer never raises: a message that is framed but invalid is reported as
``BadMessage`` (the stream stays usable, and ``error.partial`` may allow a 400),
and input that destroys framing (a bad Content-Length, a message over the size
limit) is reported as ``FramingError``, after which the connection must be closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipmesh.sip.errors import ParseError
from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message_strict

DEFAULT_MAX_MESSAGE_SIZE: Final = 65536

# Content-Length or its compact form "l" at the start of a header line (a fold
# between the colon and the value is allowed, RFC 3261 §7.3.1).
_CONTENT_LENGTH_RE: Final = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(?:\r\n[ \t]+)?([^\r\n]*)", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete, valid message and the exact bytes it was framed from."""

    message: Request | Response
    raw: bytes


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A complete message that does not parse; the stream is still in sync."""

    error: ParseError
    raw: bytes


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any more: close the connection."""

    error: ParseError


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A CRLF CRLF keep-alive ping (RFC 5626 §3.5.1): answer with b"\\r\\n"."""


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A single CRLF keep-alive pong (RFC 5626 §3.5.1)."""


FramerEvent = MessageReceived | BadMessage | FramingError | PingReceived | PongReceived

PING: Final = b"\r\n\r\n"
PONG: Final = b"\r\n"


class StreamFramer:
    """Turns a byte stream into SIP messages and keep-alive events (sans-IO).

    ``feed(data)`` returns the events completed by ``data``. A lone CRLF followed by
    nothing is reported as a pong at once (a client waiting for its pong must not
    wait for more bytes); a CRLF CRLF ping that is split exactly in the middle by
    the network is therefore seen as two pongs, which only delays that ping's
    answer to the next one.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._buf = b""
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after a FramingError: further input is ignored."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FramerEvent]:
        if self._closed:
            return []
        buf = self._buf + data if self._buf else bytes(data)
        events: list[FramerEvent] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos] == 0x0D:  # CR: a keep-alive, or the start of one
                if buf.startswith(PING, pos):
                    events.append(PingReceived())
                    pos += 4
                    continue
                if buf.startswith(PONG, pos):
                    if n - pos == 3 and buf[pos + 2] == 0x0D:
                        break  # "\r\n\r": wait to see whether it is a ping
                    events.append(PongReceived())
                    pos += 2
                    continue
                if n - pos == 1:
                    break  # a lone CR: wait for its LF
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > self.max_message_size:
                    return self._fail(events, ParseError("header section too large", 413))
                break
            length = self._content_length(buf, pos, end)
            if isinstance(length, ParseError):
                return self._fail(events, length)
            total = end + 4 - pos + (length or 0)
            if total > self.max_message_size:
                return self._fail(events, ParseError("message too large", 413))
            if n - pos < total:
                break
            raw = buf[pos : pos + total]
            pos += total
            try:
                message = parse_message_strict(raw, stream=True)
            except ParseError as exc:
                events.append(BadMessage(exc, raw))
            except Exception as exc:  # defence in depth: never break the connection loop
                events.append(BadMessage(ParseError(f"malformed message: {exc!r}"), raw))
            else:
                events.append(MessageReceived(message, raw))
        self._buf = buf[pos:]
        return events

    def _fail(self, events: list[FramerEvent], error: ParseError) -> list[FramerEvent]:
        self._closed = True
        self._buf = b""
        events.append(FramingError(error))
        return events

    @staticmethod
    def _content_length(buf: bytes, start: int, end: int) -> int | ParseError | None:
        """The body length announced in buf[start:end], None when absent.

        A negative, non-numeric or conflicting value makes the stream unframeable
        (RFC 4475 §3.1.2.3 ncl, §3.3.9 mcl01): the connection must be closed.
        """
        values = {
            m.group(1).strip(b" \t")
            for m in _CONTENT_LENGTH_RE.finditer(buf, max(start - 2, 0), end + 2)
            if m.start() >= start - 2
        }
        if not values:
            return None
        if len(values) > 1:
            return ParseError("conflicting Content-Length headers")
        value = values.pop()
        if not value.isdigit() or len(value) > 12:
            return ParseError(f"bad Content-Length {value[:20]!r}")
        return int(value)
