"""Property tests: no input makes the parser or the framer raise anything unexpected.

``parse_message_strict`` is the parser without its last-resort safety net, so a
bug that raises IndexError or ValueError shows up here instead of being turned
into a ParseError. Inputs: arbitrary bytes, and valid messages (the RFC 4475/5118
torture corpus plus a few typical ones) mutated by byte flips, insertions of
characters that matter to SIP syntax, deletions and splices.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipmesh.sip import ParseError, Request, Response, parse_message
from sipmesh.sip.framer import FramingError, MessageReceived, StreamFramer
from sipmesh.sip.parser import parse_message_strict

TORTURE = Path(__file__).parent / "torture"
CORPUS = [p.read_bytes() for p in sorted(TORTURE.glob("*/*.dat"))]
TYPICAL = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>;expires=60;q=0.5\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:[2001:db8::1]:5070;lr>\r\n"
    b'Authorization: Digest username="alice", realm="atlanta.example.com", nc=00000001\r\n'
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)
SEEDS = [TYPICAL, *CORPUS]
# Characters with a meaning somewhere in SIP syntax.
SPECIAL = st.sampled_from(
    [b"\r\n", b"\r", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%",
     b"@", b"[", b"]", b"=", b"?", b"&", b"/", b"\x00", b"\xff", b"\r\n ", b"\r\n\r\n", b"0"]
)  # fmt: skip
FAST = settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _touch(msg: Request | Response) -> None:
    """Use every lazy accessor: each must either work or raise ParseError."""
    for name in (
        "vias", "top_via", "from_", "to", "call_id", "cseq", "max_forwards", "contacts",
        "routes", "record_routes", "paths", "expires", "content_type", "content_length",
        "p_asserted_identities", "min_expires",
    ):  # fmt: skip
        try:
            getattr(msg, name)
        except ParseError:
            pass
    if isinstance(msg, Request):
        try:
            _ = msg.ruri
        except ParseError:
            pass
    msg.get_all("Allow")
    assert isinstance(bytes(msg), bytes)


def _check(data: bytes) -> None:
    error: ParseError | None = None
    try:
        msg = parse_message_strict(data)
    except ParseError as exc:
        error = exc
    if error is not None:
        assert 400 <= error.status_hint <= 599
        if error.partial is not None:
            assert isinstance(bytes(error.partial), bytes)
        return
    _touch(msg)
    # What was parsed serialises to something that parses to the same thing.
    again = parse_message(bytes(msg))
    assert again.headers == msg.headers
    assert again.body == msg.body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        kind = draw(st.integers(0, 3))
        if kind == 0:
            data[pos] = draw(st.integers(0, 255))
        elif kind == 1:
            data[pos:pos] = draw(SPECIAL)
        elif kind == 2:
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            other = draw(st.sampled_from(SEEDS))
            cut = draw(st.integers(0, len(other)))
            data[pos:] = other[cut:]
    return bytes(data)


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_parse_error(data: bytes) -> None:
    _check(data)


@FAST
@given(mutated())
def test_mutated_messages_only_raise_parse_error(data: bytes) -> None:
    _check(data)


@FAST
@given(mutated(), st.lists(st.integers(1, 97), min_size=1, max_size=8))
def test_framer_never_raises(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(max_message_size=4096)
    stream = b"\r\n\r\n" + data + b"\r\n" + TYPICAL
    pos = 0
    events = []
    for size in cuts * (len(stream) // sum(cuts) + 1):
        if pos >= len(stream):
            break
        events.extend(framer.feed(stream[pos : pos + size]))
        pos += size
    for event in events:
        if isinstance(event, MessageReceived):
            _touch(event.message)
    if not framer.closed:
        # Whatever the mutation did, the framer is still usable.
        assert all(not isinstance(e, FramingError) for e in events)


@FAST
@given(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=4), st.integers(1, 64))
def test_framer_frames_valid_pipelines_exactly(messages: list[bytes], chunk: int) -> None:
    # Seeds with a correct Content-Length come out one event per message, intact.
    framed = [m for m in messages if _stream_ready(m)]
    stream = b"".join(framed)
    framer = StreamFramer(max_message_size=1 << 20)
    events = []
    for i in range(0, len(stream), chunk):
        events.extend(framer.feed(stream[i : i + chunk]))
    assert [e.raw for e in events if not isinstance(e, FramingError)] == framed  # type: ignore[union-attr]


def _stream_ready(data: bytes) -> bool:
    try:
        msg = parse_message(data)
    except ParseError:
        return False
    return msg.content_length is not None and bytes(msg) == data and not data.startswith(b"\r\n")
