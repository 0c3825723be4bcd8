"""Stream framing: Content-Length, pipelining, partial reads, keep-alives, limits."""

from __future__ import annotations

from collections.abc import Sequence

from sipmesh.sip import Request
from sipmesh.sip.framer import (
    BadMessage,
    FramingError,
    MessageReceived,
    PingReceived,
    PongReceived,
    StreamFramer,
)


def message(call_id: str, body: bytes = b"", *, length: int | None = None) -> bytes:
    cl = len(body) if length is None else length
    return (
        "MESSAGE sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-" + call_id + "\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:bob@example.com>\r\n"
        "Call-ID: " + call_id + "\r\n"
        "CSeq: 1 MESSAGE\r\n"
        f"Content-Length: {cl}\r\n"
        "\r\n"
    ).encode() + body


def call_ids(events: Sequence[object]) -> list[str]:
    out = []
    for event in events:
        assert isinstance(event, MessageReceived)
        out.append(event.message.call_id)
    return out


def test_pipelined_messages_in_one_read() -> None:
    framer = StreamFramer()
    data = message("a", b"hello") + message("b") + message("c", b"\r\n\r\n")
    events = framer.feed(data)
    assert call_ids(events) == ["a", "b", "c"]
    assert isinstance(events[2], MessageReceived)
    assert events[2].message.body == b"\r\n\r\n"
    assert events[0].raw == message("a", b"hello")  # type: ignore[union-attr]
    assert framer.buffered == 0


def test_byte_by_byte_delivery() -> None:
    framer = StreamFramer()
    data = message("a", b"body with \x00 and \r inside") + message("b")
    events = []
    for i in range(len(data)):
        events.extend(framer.feed(data[i : i + 1]))
    assert call_ids(events) == ["a", "b"]
    first = events[0]
    assert isinstance(first, MessageReceived)
    assert isinstance(first.message, Request)
    assert first.message.body == b"body with \x00 and \r inside"


def test_keepalive_ping_and_pong() -> None:
    framer = StreamFramer()
    events = framer.feed(b"\r\n\r\n" + message("a") + b"\r\n")
    assert isinstance(events[0], PingReceived)
    assert isinstance(events[1], MessageReceived)
    assert isinstance(events[2], PongReceived)
    assert framer.feed(b"\r\n") == [PongReceived()]
    # A ping split after its third byte waits for the fourth.
    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"\n") == [PingReceived()]


def test_waits_for_the_body() -> None:
    framer = StreamFramer()
    data = message("a", b"0123456789")
    assert framer.feed(data[:-3]) == []
    assert framer.buffered == len(data) - 3
    assert call_ids(framer.feed(data[-3:])) == ["a"]


def test_invalid_message_keeps_stream_in_sync() -> None:
    framer = StreamFramer()
    bad = message("x").replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
    events = framer.feed(bad + message("b"))
    assert isinstance(events[0], BadMessage)
    assert events[0].error.status_hint == 400
    assert events[0].error.partial is not None
    assert call_ids(events[1:]) == ["b"]
    assert not framer.closed


def test_missing_content_length_on_stream_is_answerable_400() -> None:
    framer = StreamFramer()
    data = message("a").replace(b"Content-Length: 0\r\n", b"")
    (event,) = framer.feed(data)
    assert isinstance(event, BadMessage)
    assert event.error.status_hint == 400
    assert event.error.partial is not None


def test_negative_content_length_closes_the_stream() -> None:
    framer = StreamFramer()
    data = message("a").replace(b"Content-Length: 0", b"Content-Length: -999")
    events = framer.feed(message("ok") + data + message("never"))
    assert call_ids(events[:1]) == ["ok"]
    assert isinstance(events[1], FramingError)
    assert framer.closed
    assert framer.feed(message("later")) == []


def test_conflicting_content_lengths_close_the_stream() -> None:
    framer = StreamFramer()
    data = message("a").replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 5\r\n")
    (event,) = framer.feed(data)
    assert isinstance(event, FramingError)


def test_size_limits_give_413() -> None:
    framer = StreamFramer(max_message_size=300)
    (event,) = framer.feed(message("a", length=10_000))
    assert isinstance(event, FramingError)
    assert event.error.status_hint == 413
    endless = StreamFramer(max_message_size=300)
    assert endless.feed(b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 10) == []
    (event,) = endless.feed(b"X: y\r\n" * 60)
    assert isinstance(event, FramingError)
    assert event.error.status_hint == 413


def test_compact_content_length_frames() -> None:
    framer = StreamFramer()
    data = message("a", b"abc").replace(b"Content-Length: 3", b"l: 3")
    assert call_ids(framer.feed(data + message("b"))) == ["a", "b"]
