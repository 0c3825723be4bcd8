"""HEP v3 (EEP v3): the encapsulation Homer and Kamailio's sipcapture read.

A HEP3 packet is the ASCII id ``HEP3``, the total length (uint16, network order)
and a sequence of chunks; each chunk is vendor id (uint16, 0 = generic), chunk type
(uint16), chunk length (uint16, header included) and the value. The generic chunk
types used here (HEP3 specification, "HEP3 Network Protocol Specification", chunk
type table):

==== ================================ =========
0x01 IP protocol family               uint8 (2 = IPv4, 10 = IPv6)
0x02 IP protocol id                   uint8 (17 UDP, 6 TCP, 132 SCTP)
0x03 IPv4 source address              4 octets
0x04 IPv4 destination address         4 octets
0x05 IPv6 source address              16 octets
0x06 IPv6 destination address         16 octets
0x07 source port                      uint16
0x08 destination port                 uint16
0x09 timestamp, seconds               uint32
0x0a timestamp, microseconds offset   uint32
0x0b protocol type                    uint8 (1 = SIP)
0x0c capture agent id                 uint32
0x0e authentication key               octets
0x0f captured payload                 octets
0x11 correlation id                   octets (the Call-ID for SIP)
==== ================================ =========

TLS is sent with IP protocol id 22 (IPPROTO_IDP) as Kamailio's siptrace does, so a
capture server can tell it from plain TCP; WebSocket flows count as TCP.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "HepError",
    "HepPacket",
    "decode_hep3",
    "encode_hep3",
    "ip_proto",
    "parse_duplicate_uri",
]

MAGIC = b"HEP3"
PROTO_SIP = 1
_AF_INET = 2
_AF_INET6 = 10
_IP_PROTO = {"udp": 17, "tcp": 6, "ws": 6, "wss": 22, "tls": 22, "sctp": 132}

_CHUNK = struct.Struct("!HHH")
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class HepError(ValueError):
    """Not a HEP3 packet, or one whose chunks do not add up."""


def ip_proto(transport: str) -> int:
    """HEP's IP protocol id for a sipmesh transport name."""
    return _IP_PROTO.get(transport.lower(), 17)


@dataclass(frozen=True, slots=True)
class HepPacket:
    """One captured message, as encoded and as a decoder reads it back."""

    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes
    timestamp: float
    proto: int = 17
    proto_type: int = PROTO_SIP
    capture_id: int = 0
    auth_key: bytes = b""
    correlation_id: bytes = b""

    @property
    def family(self) -> int:
        return _AF_INET6 if ":" in self.src[0] else _AF_INET


def _chunk(kind: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF - _CHUNK.size:
        raise HepError(f"HEP3 chunk 0x{kind:x} of {len(value)} bytes exceeds the 16-bit length")
    return _CHUNK.pack(0, kind, _CHUNK.size + len(value)) + value


def _packed_ip(host: str, family: int) -> bytes:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return b"\0" * (16 if family == _AF_INET6 else 4)
    if family == _AF_INET6 and addr.version == 4:
        return ipaddress.IPv6Address(f"::ffff:{addr}").packed
    return addr.packed


def encode_hep3(packet: HepPacket) -> bytes:
    """The HEP3 bytes of ``packet`` (source and destination of one family)."""
    family = packet.family
    sec = int(packet.timestamp)
    usec = round((packet.timestamp - sec) * 1_000_000)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    v6 = family == _AF_INET6
    parts = [
        _chunk(0x01, _U8.pack(family)),
        _chunk(0x02, _U8.pack(packet.proto)),
        _chunk(0x05 if v6 else 0x03, _packed_ip(packet.src[0], family)),
        _chunk(0x06 if v6 else 0x04, _packed_ip(packet.dst[0], family)),
        _chunk(0x07, _U16.pack(packet.src[1] & 0xFFFF)),
        _chunk(0x08, _U16.pack(packet.dst[1] & 0xFFFF)),
        _chunk(0x09, _U32.pack(sec & 0xFFFFFFFF)),
        _chunk(0x0A, _U32.pack(usec)),
        _chunk(0x0B, _U8.pack(packet.proto_type)),
        _chunk(0x0C, _U32.pack(packet.capture_id & 0xFFFFFFFF)),
    ]
    if packet.auth_key:
        parts.append(_chunk(0x0E, packet.auth_key))
    if packet.correlation_id:
        parts.append(_chunk(0x11, packet.correlation_id))
    parts.append(_chunk(0x0F, packet.payload))
    body = b"".join(parts)
    total = len(MAGIC) + _U16.size + len(body)
    if total > 0xFFFF:
        raise HepError(f"HEP3 packet of {total} bytes exceeds the 16-bit length")
    return MAGIC + _U16.pack(total) + body


def decode_hep3(data: bytes) -> HepPacket:
    """Read a HEP3 packet (unknown and vendor chunks are skipped)."""
    if len(data) < 6 or data[:4] != MAGIC:
        raise HepError("not a HEP3 packet")
    total = _U16.unpack_from(data, 4)[0]
    if total > len(data) or total < 6:
        raise HepError(f"HEP3 length {total} does not match {len(data)} bytes")
    chunks: dict[int, bytes] = {}
    pos = 6
    while pos < total:
        if pos + _CHUNK.size > total:
            raise HepError("truncated chunk header")
        vendor, kind, length = _CHUNK.unpack_from(data, pos)
        if length < _CHUNK.size or pos + length > total:
            raise HepError(f"chunk 0x{kind:x} has a bad length {length}")
        if vendor == 0:
            chunks[kind] = data[pos + _CHUNK.size : pos + length]
        pos += length
    try:
        family = chunks[0x01][0]
        if family == _AF_INET6:
            src_ip = ipaddress.IPv6Address(chunks[0x05]).compressed
            dst_ip = ipaddress.IPv6Address(chunks[0x06]).compressed
        else:
            src_ip = str(ipaddress.IPv4Address(chunks[0x03]))
            dst_ip = str(ipaddress.IPv4Address(chunks[0x04]))
        src_port = _U16.unpack(chunks[0x07])[0]
        dst_port = _U16.unpack(chunks[0x08])[0]
        sec = _U32.unpack(chunks[0x09])[0]
        usec = _U32.unpack(chunks.get(0x0A, b"\0\0\0\0"))[0]
        payload = chunks[0x0F]
    except (KeyError, IndexError, struct.error, ValueError) as exc:
        raise HepError(f"HEP3 packet lacks a mandatory chunk: {exc}") from None
    return HepPacket(
        src=(src_ip, src_port),
        dst=(dst_ip, dst_port),
        payload=payload,
        timestamp=sec + usec / 1_000_000,
        proto=chunks.get(0x02, b"\x11")[0],
        proto_type=chunks.get(0x0B, b"\x01")[0],
        capture_id=_U32.unpack(chunks[0x0C])[0] if len(chunks.get(0x0C, b"")) == 4 else 0,
        auth_key=chunks.get(0x0E, b""),
        correlation_id=chunks.get(0x11, b""),
    )


def parse_duplicate_uri(uri: str) -> tuple[str, str, int]:
    """siptrace's ``duplicate_uri`` → (transport, host, port).

    ``sip:10.0.0.5:9060``, ``sip:[2001:db8::5]:9060;transport=tcp``, ``sip:homer``
    (port 9060, the usual HEP port). Only udp and tcp are meaningful for HEP.
    """
    text = uri.strip()
    if not text.lower().startswith("sip:"):
        raise ValueError(f"HEP destination {uri!r} is not a sip: URI")
    rest, _, params = text[4:].partition(";")
    transport = "udp"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "transport" and value:
            transport = value.strip().lower()
    if transport not in ("udp", "tcp"):
        raise ValueError(f"HEP destination {uri!r}: transport must be udp or tcp")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail.lstrip(":")
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    if not host:
        raise ValueError(f"HEP destination {uri!r} has no host")
    if port_text and not port_text.isdigit():
        raise ValueError(f"HEP destination {uri!r}: bad port")
    port = int(port_text) if port_text else 9060
    if not 0 < port < 65536:
        raise ValueError(f"HEP destination {uri!r}: port out of range")
    return transport, host, port


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
