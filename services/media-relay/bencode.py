"""Bencoding, the encoding of rtpengine's ng control protocol (BitTorrent's BEP 3).

Four types: byte strings ``<len>:<bytes>``, integers ``i<n>e``, lists ``l…e`` and
dictionaries ``d…e`` with byte-string keys. Decoded dictionaries have ``str`` keys
(ng keys are ASCII); string values stay ``bytes`` (an SDP is bytes), and
:func:`encode` accepts ``str`` as UTF-8.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BencodeError", "decode", "encode"]

Value = Any  # bytes | int | list[Value] | dict[str, Value]

_MAX_DEPTH = 32


class BencodeError(ValueError):
    pass


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, float):
        out.append(b"i%de" % int(value))
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        # BEP 3: keys sorted as raw strings
        items = sorted(
            ((k.encode() if isinstance(k, str) else bytes(k), v) for k, v in value.items()),
            key=lambda kv: kv[0],
        )
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """Decode exactly one value filling ``data``; raises BencodeError with the offset."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if depth > _MAX_DEPTH:
        raise BencodeError("nested too deeply")
    if pos >= len(data):
        raise BencodeError(f"unexpected end of data at offset {pos}")
    lead = data[pos]
    if lead == 0x69:  # i
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError(f"unterminated integer at offset {pos}")
        text = data[pos + 1 : end]
        try:
            number = int(text)
        except ValueError:
            raise BencodeError(f"bad integer {text!r} at offset {pos}") from None
        return number, end + 1
    if lead == 0x6C:  # l
        items: list[Value] = []
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        if pos >= len(data):
            raise BencodeError("unterminated list")
        return items, pos + 1
    if lead == 0x64:  # d
        result: dict[str, Value] = {}
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError(f"dictionary key is not a string at offset {pos}")
            item, pos = _decode(data, pos, depth + 1)
            result[key.decode("utf-8", "replace")] = item
        if pos >= len(data):
            raise BencodeError("unterminated dictionary")
        return result, pos + 1
    if 0x30 <= lead <= 0x39:
        colon = data.find(b":", pos)
        if colon < 0 or not data[pos:colon].isdigit():
            raise BencodeError(f"bad string length at offset {pos}")
        length = int(data[pos:colon])
        start = colon + 1
        if start + length > len(data):
            raise BencodeError(f"string at offset {pos} runs past the end")
        return bytes(data[start : start + length]), start + length
    raise BencodeError(f"unexpected byte {chr(lead)!r} at offset {pos}")
