#!/usr/bin/env python3
"""Benchmark: sipmesh.sip parser vs the `sippy` package's parser, same messages, same run.

For each message (a ~600-byte INVITE, a REGISTER with Authorization, a 200 OK) it
times: parse + top Via branch + Call-ID + CSeq + From tag + serialise, and prints
the microseconds per message for both parsers and the ratio. It is a script, not a
test: the numbers depend on the machine. Usage:

    .venv/bin/python bench/bench_parser.py [--iterations N] [--repeat R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sipmesh.sip import parse_message

_SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(_SDP)
) + _SDP

REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1827 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.4>;expires=7200\r\n"
    b'Authorization: Digest username="bob", realm="biloxi.example.com", '
    b'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:registrar.biloxi.example.com", '
    b'response="245f23415f11432b3434341c022", algorithm=MD5, cnonce="0a4f113b", '
    b"qop=auth, nc=00000001\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP server10.biloxi.example.com;branch=z9hG4bK4b43c2ff8.1\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;"
    b"received=192.0.2.1\r\n"
    b"Record-Route: <sip:server10.biloxi.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

MESSAGES = {f"INVITE ({len(INVITE)} B)": INVITE, "REGISTER+auth": REGISTER, "200 OK": OK200}


def sipmesh_work(data: bytes) -> object:
    msg = parse_message(data)
    via = msg.top_via
    assert via is not None
    return (via.branch, msg.call_id, msg.cseq.seq, msg.cseq.method, msg.from_.tag, bytes(msg))


def make_sippy_work() -> Callable[[bytes], object] | None:
    try:
        from sippy.SipRequest import SipRequest
        from sippy.SipResponse import SipResponse
    except ImportError:
        return None

    def work(data: bytes) -> object:
        # sippy parses text; decoding is part of its cost as it would be in use.
        text = data.decode("utf-8")
        msg = SipResponse(text) if text.startswith("SIP/2.0 ") else SipRequest(text)
        cseq = msg.getHFBody("cseq")
        return (
            msg.getHFBody("via").getBranch(),
            str(msg.getHFBody("call-id")),
            cseq.getCSeqNum(),
            cseq.getCSeqMethod(),
            msg.getHFBody("from").getTag(),
            str(msg).encode("utf-8"),
        )

    return work


def time_per_call(
    work: Callable[[bytes], object], data: bytes, iterations: int, repeat: int
) -> float:
    """Best-of-`repeat` microseconds per call over `iterations` calls."""
    work(data)  # warm up caches and imports
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(iterations):
            work(data)
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    sippy_work = make_sippy_work()
    print(f"{'message':<18} {'sipmesh µs':>11} {'sippy µs':>10} {'sippy/sipmesh':>14}")
    for name, data in MESSAGES.items():
        ours = time_per_call(sipmesh_work, data, args.iterations, args.repeat)
        if sippy_work is None:
            print(f"{name:<18} {ours:>11.2f} {'n/a':>10} {'n/a':>14}")
            continue
        theirs = time_per_call(sippy_work, data, args.iterations, args.repeat)
        print(f"{name:<18} {ours:>11.2f} {theirs:>10.2f} {theirs / ours:>13.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
