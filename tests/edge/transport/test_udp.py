"""UDP listener: round trip, size cap, keep-alives, IPv6, SO_REUSEPORT, a real sipsak peer."""

from __future__ import annotations

import asyncio
import shutil
import socket
from typing import Any

import pytest

from sipmesh.edge.transport import Flow, TransportError
from sipmesh.sip import Request, parse_message
from sipmesh.sip.stateless import make_response


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))


async def _client(host: str, port: int) -> tuple[asyncio.DatagramTransport, _Client]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Client, remote_addr=(host, port))
    return transport, proto


def answer_200(made_manager: Any) -> Any:
    def on_msg(data: bytes, flow: Flow) -> None:
        request = parse_message(data)
        assert isinstance(request, Request)
        made_manager().send(bytes(make_response(request, 200)), flow)

    return on_msg


async def test_round_trip_answers_from_the_same_socket(make_manager: Any, kit: Any) -> None:
    sink = kit.Sink()
    made = await make_manager(["udp:127.0.0.1:0"], sink)
    sink.on_msg = answer_200(lambda: made.manager)
    port = made.port("udp")
    transport, client = await _client("127.0.0.1", port)
    try:
        transport.sendto(kit.options())
        async with asyncio.timeout(5):
            data, addr = await client.received.get()
    finally:
        transport.close()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")
    assert addr[1] == port  # symmetric: the reply leaves the listening socket
    (_, flow, received_at) = sink.messages[0]
    local = transport.get_extra_info("sockname")
    assert flow.transport == "udp"
    assert flow.remote == ("127.0.0.1", local[1])
    assert flow.flow_id == f"udp|udp:127.0.0.1:0|127.0.0.1|{local[1]}"
    assert flow.local == ("127.0.0.1", port)
    assert not flow.secure
    assert not flow.reliable
    assert received_at > 0
    assert made.manager.flow(flow.flow_id) == flow


async def test_oversize_datagram_dropped_and_counted(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["udp:127.0.0.1:0"], max_message_size=60000)
    transport, _ = await _client("127.0.0.1", made.port("udp"))
    try:
        transport.sendto(b"OPTIONS " + b"x" * 64992)  # 65000 bytes: one datagram, over the cap
        transport.sendto(kit.options())
        await made.sink.wait_for(lambda: len(made.sink.messages) >= 1)
    finally:
        transport.close()
    assert [m[0] for m in made.sink.messages] == [kit.options()]
    assert made.metric("sipmesh_drop_oversize_messages_total", transport="udp") == 1


async def test_crlf_keepalive_datagrams_are_not_passed_up(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["udp:127.0.0.1:0"])
    transport, _ = await _client("127.0.0.1", made.port("udp"))
    try:
        transport.sendto(b"\r\n\r\n")
        transport.sendto(b"\r\n")
        transport.sendto(kit.options())
        await made.sink.wait_for(lambda: len(made.sink.messages) >= 1)
    finally:
        transport.close()
    assert [m[0] for m in made.sink.messages] == [kit.options()]
    assert made.metric("sipmesh_rcv_keepalives_total", transport="udp") == 2


async def test_ipv6_loopback_round_trip(make_manager: Any, kit: Any) -> None:
    sink = kit.Sink()
    made = await make_manager(["udp:[::1]:0"], sink)
    sink.on_msg = answer_200(lambda: made.manager)
    info = made.manager.listeners()[0]
    assert info.host == "::1"
    assert info.family == socket.AF_INET6
    transport, client = await _client("::1", info.port)
    try:
        transport.sendto(kit.options())
        async with asyncio.timeout(5):
            data, _ = await client.received.get()
    finally:
        transport.close()
    assert data.startswith(b"SIP/2.0 200 OK")
    assert sink.messages[0][1].remote[0] == "::1"


async def test_send_to_uses_the_listener_of_the_family(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["udp:127.0.0.1:0", "udp:[::1]:0"])
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(_Client, local_addr=("::1", 0))
    try:
        port = peer_t.get_extra_info("sockname")[1]
        flow = await made.manager.send_to(b"hello", "udp", "::1", port)
        async with asyncio.timeout(5):
            data, addr = await peer.received.get()
    finally:
        peer_t.close()
    assert data == b"hello"
    v6_port = next(i.port for i in made.manager.listeners() if i.family == socket.AF_INET6)
    assert addr[1] == v6_port
    assert flow.listener == "udp:[::1]:0"
    with pytest.raises(TransportError, match="do not fit"):
        await made.manager.send_to(b"x" * 70000, "udp", "::1", port)


async def test_bind_conflict_names_the_listener_and_reuse_port_shares(
    make_manager: Any, kit: Any
) -> None:
    first = await make_manager(["udp:127.0.0.1:0"], reuse_port=True)
    port = first.port("udp")
    with pytest.raises(TransportError, match=rf"udp:127.0.0.1:{port}: cannot bind"):
        await make_manager([f"udp:127.0.0.1:{port}"])
    second = await make_manager([f"udp:127.0.0.1:{port}"], reuse_port=True)
    assert second.port("udp") == port


@pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak not installed")
async def test_real_peer_sipsak_options_gets_200(make_manager: Any, kit: Any) -> None:
    sink = kit.Sink()
    made = await make_manager(["udp:127.0.0.1:0"], sink)
    sink.on_msg = answer_200(lambda: made.manager)
    proc = await asyncio.create_subprocess_exec(
        "sipsak", "-s", f"sip:ping@127.0.0.1:{made.port('udp')}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")
    request = parse_message(sink.messages[0][0])
    assert isinstance(request, Request)
    assert request.method == "OPTIONS"
