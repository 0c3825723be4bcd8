"""HEP v3 encoding/decoding and the UDP/TCP senders (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from sipmesh.observe.hep import (
    HepError,
    HepPacket,
    decode_hep3,
    encode_hep3,
    ip_proto,
    parse_duplicate_uri,
)
from sipmesh.observe.hep_sender import HepSender

SIP = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: abc@h\r\nContent-Length: 0\r\n\r\n"


def _chunks(data: bytes) -> dict[int, bytes]:
    """An independent walk over the chunk list (checks the wire layout, not the decoder)."""
    out: dict[int, bytes] = {}
    pos = 6
    while pos < len(data):
        vendor, kind, length = struct.unpack_from("!HHH", data, pos)
        assert vendor == 0
        out[kind] = data[pos + 6 : pos + length]
        pos += length
    assert pos == len(data)
    return out


def test_ipv4_packet_layout_follows_the_hep3_chunk_table() -> None:
    packet = HepPacket(
        src=("192.0.2.1", 5060),
        dst=("198.51.100.2", 5080),
        payload=SIP,
        timestamp=1700000000.25,
        proto=17,
        capture_id=2001,
        auth_key=b"secret",
        correlation_id=b"abc@h",
    )
    data = encode_hep3(packet)
    assert data[:4] == b"HEP3"
    assert struct.unpack("!H", data[4:6])[0] == len(data)
    chunks = _chunks(data)
    assert chunks[0x01] == b"\x02"  # AF_INET
    assert chunks[0x02] == b"\x11"  # UDP
    assert chunks[0x03] == socket.inet_aton("192.0.2.1")
    assert chunks[0x04] == socket.inet_aton("198.51.100.2")
    assert struct.unpack("!H", chunks[0x07])[0] == 5060
    assert struct.unpack("!H", chunks[0x08])[0] == 5080
    assert struct.unpack("!I", chunks[0x09])[0] == 1700000000
    assert struct.unpack("!I", chunks[0x0A])[0] == 250000
    assert chunks[0x0B] == b"\x01"  # SIP
    assert struct.unpack("!I", chunks[0x0C])[0] == 2001
    assert chunks[0x0E] == b"secret"
    assert chunks[0x0F] == SIP
    assert chunks[0x11] == b"abc@h"
    assert decode_hep3(data) == packet


def test_ipv6_round_trip_and_optional_chunks_left_out() -> None:
    packet = HepPacket(("2001:db8::1", 5060), ("::1", 5061), SIP, 12.5, proto=ip_proto("tls"))
    data = encode_hep3(packet)
    chunks = _chunks(data)
    assert chunks[0x01] == b"\x0a"
    assert len(chunks[0x05]) == 16
    assert len(chunks[0x06]) == 16
    assert 0x0E not in chunks
    assert 0x11 not in chunks
    assert decode_hep3(data) == packet
    assert packet.proto == 22  # TLS as Kamailio's siptrace marks it


@pytest.mark.parametrize(
    "data",
    [b"", b"HEP2\x00\x06", b"HEP3\x00\x40abc", b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x02"],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(HepError):
        decode_hep3(data)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(HepError):
        encode_hep3(HepPacket(("1.2.3.4", 1), ("1.2.3.4", 2), b"x" * 70000, 0.0))


def test_duplicate_uri_forms() -> None:
    assert parse_duplicate_uri("sip:10.0.0.5:9061") == ("udp", "10.0.0.5", 9061)
    assert parse_duplicate_uri("sip:homer;transport=tcp") == ("tcp", "homer", 9060)
    assert parse_duplicate_uri("sip:[2001:db8::5]:9000") == ("udp", "2001:db8::5", 9000)
    for bad in ("http://x", "sip::9060", "sip:h:99999", "sip:h;transport=tls", "sip:h:x"):
        with pytest.raises(ValueError):
            parse_duplicate_uri(bad)


async def test_udp_sender_delivers_datagrams() -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Server(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sender = HepSender("udp", "127.0.0.1", port)
    await sender.start()
    try:
        packet = encode_hep3(HepPacket(("127.0.0.1", 1), ("127.0.0.1", 2), SIP, 1.0))
        sender.send(packet)
        got = await asyncio.wait_for(received.get(), 5)
        assert decode_hep3(got).payload == SIP
        assert sender.sent == 1
    finally:
        await sender.stop()
        transport.close()


async def test_tcp_sender_streams_packets_back_to_back() -> None:
    buffer = bytearray()
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not done.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                break
            buffer.extend(chunk)
            if buffer.count(b"HEP3") >= 3:
                done.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sender = HepSender("tcp", "127.0.0.1", port)
    await sender.start()
    try:
        for i in range(3):
            sender.send(encode_hep3(HepPacket(("127.0.0.1", i), ("127.0.0.1", 2), SIP, 1.0)))
        await asyncio.wait_for(done.wait(), 5)
        data, ports = bytes(buffer), []
        while data:
            length = struct.unpack("!H", data[4:6])[0]
            ports.append(decode_hep3(data[:length]).src[1])
            data = data[length:]
        assert ports == [0, 1, 2]
    finally:
        await sender.stop()
        server.close()
        await server.wait_closed()
