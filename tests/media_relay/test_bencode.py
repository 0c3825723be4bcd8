"""Bencoding (BEP 3) as the ng protocol uses it."""

from __future__ import annotations

import pytest

from sipmesh.media_relay.bencode import BencodeError, decode, encode


def test_round_trip_of_an_ng_offer() -> None:
    message = {
        "command": "offer",
        "call-id": "abc@host",
        "flags": ["trust-address", "symmetric"],
        "replace": ["origin"],
        "received-from": ["IP4", "192.0.2.1"],
        "sdp": b"v=0\r\n",
        "limit": 32,
    }
    data = encode(message)
    # BEP 3: keys sorted, strings length-prefixed.
    assert data.startswith(b"d7:call-id8:abc@host7:command5:offer5:flagsl13:trust-address")
    back = decode(data)
    assert back["command"] == b"offer"
    assert back["flags"] == [b"trust-address", b"symmetric"]
    assert back["limit"] == 32
    assert back["sdp"] == b"v=0\r\n"


def test_integers_and_nesting() -> None:
    assert encode(-5) == b"i-5e"
    assert decode(b"li1eli2eee") == [1, [2]]
    assert decode(b"d1:ad1:bi0eee") == {"a": {"b": 0}}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "unexpected end"),
        (b"d7:command", "unexpected end"),
        (b"d7:command4:pin", "runs past the end"),
        (b"i12", "unterminated integer"),
        (b"ixe", "bad integer"),
        (b"10:abc", "runs past the end"),
        (b"di1e1:ae", "key is not a string"),
        (b"le extra", "trailing data"),
        (b"x", "unexpected byte"),
        (b"l" * 100, "nested too deeply"),
    ],
)
def test_malformed_input_raises_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        decode(data)
