"""TCP connections: framing, keep-alives, size cap, read timeout, lifetime, reuse, caps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sipmesh.edge.transport import Flow, TransportError

TCP = "tcp:127.0.0.1:0"


async def _connect(port: int, host: str = "127.0.0.1") -> tuple[asyncio.StreamReader, Any]:
    return await asyncio.open_connection(host, port)


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True when the server closes the connection (EOF or reset) within 5 s."""
    async with asyncio.timeout(5):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return True


async def test_pipelined_and_split_messages_are_framed(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP])
    _reader, writer = await _connect(made.port("tcp"))
    first, second = kit.options(1, b"v=0\r\n"), kit.options(2)
    writer.write(first + second)  # two messages in one write
    third = kit.options(3, b"hello body")
    for i in range(0, len(third), 7):  # one message over many writes
        writer.write(third[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0)
    await made.sink.wait_for(lambda: len(made.sink.messages) == 3)
    assert [m[0] for m in made.sink.messages] == [first, second, third]
    flows = {m[1] for m in made.sink.messages}
    assert len(flows) == 1
    flow = flows.pop()
    assert flow.transport == "tcp"
    assert flow.reliable
    assert flow.remote == writer.get_extra_info("sockname")[:2]
    assert made.manager.flow(flow.flow_id) == flow
    assert made.metric("sipmesh_tcp_current_opened_connections", transport="tcp") == 1
    writer.close()
    await made.sink.wait_for(lambda: made.sink.closed == [flow])
    assert made.manager.flow(flow.flow_id) is None
    with pytest.raises(TransportError, match="is gone"):
        made.manager.send(b"x", flow)
    assert made.metric("sipmesh_tcp_current_opened_connections", transport="tcp") == 0


async def test_reply_goes_back_over_the_connection(make_manager: Any, kit: Any) -> None:
    sink = kit.Sink()
    made = await make_manager([TCP], sink)
    sink.on_msg = lambda data, flow: made.manager.send(b"SIP/2.0 200 OK\r\n\r\n", flow)
    reader, writer = await _connect(made.port("tcp"))
    writer.write(kit.options())
    async with asyncio.timeout(5):
        line = await reader.readuntil(b"\r\n\r\n")
    assert line == b"SIP/2.0 200 OK\r\n\r\n"
    writer.close()


async def test_crlf_ping_gets_pong_and_is_not_passed_up(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP])
    reader, writer = await _connect(made.port("tcp"))
    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(5):
        pong = await reader.readexactly(2)
    assert pong == b"\r\n"
    writer.write(kit.options())
    await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    assert made.sink.messages[0][0] == kit.options()
    assert made.metric("sipmesh_rcv_keepalives_total", transport="tcp") == 1
    writer.close()


async def test_one_megabyte_message_closes_the_connection(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP])
    reader, writer = await _connect(made.port("tcp"))
    writer.write(kit.options(1, b"x" * 1_000_000))
    assert await _closed_by_peer(reader)
    await made.sink.wait_for(lambda: len(made.sink.closed) == 1)
    assert made.sink.messages == []
    assert made.metric("sipmesh_drop_oversize_messages_total", transport="tcp") == 1
    writer.close()


async def test_half_message_then_silence_is_closed_others_served(
    make_manager: Any, kit: Any
) -> None:
    made = await make_manager([TCP], tcp_read_timeout=0.3)
    port = made.port("tcp")
    slow_reader, slow_writer = await _connect(port)
    slow_writer.write(kit.options()[:40])  # half a request, then nothing
    _good_reader, good_writer = await _connect(port)
    # The good client keeps being served while the slow one is pending and after.
    for n in range(1, 4):
        good_writer.write(kit.options(n))
        await made.sink.wait_for(lambda n=n: len(made.sink.messages) == n)
        await asyncio.sleep(0.15)
    assert await _closed_by_peer(slow_reader)
    assert made.metric("sipmesh_tcp_read_timeout_total", transport="tcp") == 1
    good_writer.write(kit.options(4))
    await made.sink.wait_for(lambda: len(made.sink.messages) == 4)
    assert len({m[1].flow_id for m in made.sink.messages}) == 1
    assert len(made.manager.flows()) == 1
    slow_writer.close()
    good_writer.close()


async def test_idle_connection_closed_after_lifetime(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP], tcp_connection_lifetime=0.3)
    reader, writer = await _connect(made.port("tcp"))
    writer.write(kit.options())
    assert await _closed_by_peer(reader)
    await made.sink.wait_for(lambda: len(made.sink.closed) == 1)
    assert len(made.sink.messages) == 1
    assert made.metric("sipmesh_tcp_con_timeout_total", transport="tcp") == 1
    writer.close()


async def test_send_to_reuses_one_connection(make_manager: Any) -> None:
    made = await make_manager([TCP])
    accepted: list[asyncio.StreamReader] = []
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)
        while data := await reader.read(65536):
            got.put_nowait(data)
        writer.close()

    peer = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    try:
        # Two concurrent sends and a later one: one dial, one connection.
        flows = await asyncio.gather(
            made.manager.send_to(b"one", "tcp", "127.0.0.1", port),
            made.manager.send_to(b"two", "tcp", "127.0.0.1", port),
        )
        third = await made.manager.send_to(b"three", "TCP", "127.0.0.1", port)
        received = b""
        async with asyncio.timeout(5):
            while len(received) < len(b"onetwothree"):
                received += await got.get()
        assert sorted(received.decode()) == sorted("onetwothree")
        assert len(accepted) == 1
        assert flows[0] == flows[1] == third
        assert third.remote == ("127.0.0.1", port)
        assert (
            made.metric("sipmesh_tcp_established_total", transport="tcp", direction="active") == 1
        )
        # By flow id, too; and an alias makes another address reach the same connection.
        assert made.manager.add_alias(third.flow_id, "127.0.0.1", 5999)
        again = await made.manager.send_to(b"four", "tcp", "127.0.0.1", 5999)
        assert again == third
    finally:
        peer.close()
        await peer.wait_closed()


async def test_send_to_an_accepted_connection_by_address(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP])
    reader, writer = await _connect(made.port("tcp"))
    writer.write(kit.options())
    await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    flow: Flow = made.sink.messages[0][1]
    # A request towards the client's address goes over its own connection (no dial).
    sent = await made.manager.send_to(b"NOTIFY", "tcp", *flow.remote)
    assert sent == flow
    async with asyncio.timeout(5):
        assert await reader.readexactly(6) == b"NOTIFY"
    writer.close()


async def test_connect_failure_is_a_transport_error(make_manager: Any) -> None:
    made = await make_manager([TCP])
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(TransportError, match=f"tcp connect to 127.0.0.1:{port}"):
        await made.manager.send_to(b"x", "tcp", "127.0.0.1", port)
    assert made.metric("sipmesh_tcp_connect_failed_total", transport="tcp") == 1


async def test_total_connection_cap(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP], tcp_max_connections=2)
    port = made.port("tcp")
    conns = [await _connect(port) for _ in range(2)]
    for n, (_, w) in enumerate(conns, 1):
        w.write(kit.options(n))
    await made.sink.wait_for(lambda: len(made.sink.messages) == 2)
    reader, writer = await _connect(port)
    assert await _closed_by_peer(reader)
    assert made.metric("sipmesh_tcp_local_reject_total", transport="tcp") == 1
    with pytest.raises(TransportError, match="tcp_max_connections"):
        await made.manager.send_to(b"x", "tcp", "127.0.0.1", 9)
    conns[0][1].close()
    await made.sink.wait_for(lambda: len(made.sink.closed) == 1)
    _r4, w4 = await _connect(port)  # room again
    w4.write(kit.options(4))
    await made.sink.wait_for(lambda: len(made.sink.messages) == 3)
    for w in (writer, conns[1][1], w4):
        w.close()


async def test_per_source_connection_cap(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["tcp:127.0.0.1:0", "tcp:[::1]:0"], tcp_max_connections_per_source=1)
    v4 = next(i.port for i in made.manager.listeners() if i.host == "127.0.0.1")
    v6 = next(i.port for i in made.manager.listeners() if i.host == "::1")
    _, w1 = await _connect(v4)
    w1.write(kit.options(1))
    await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    r2, w2 = await _connect(v4)
    assert await _closed_by_peer(r2)  # second from 127.0.0.1: refused
    _, w3 = await _connect(v6, "::1")  # another source (::1) is still welcome
    w3.write(kit.options(3))
    await made.sink.wait_for(lambda: len(made.sink.messages) == 2)
    assert made.sink.messages[1][1].remote[0] == "::1"
    assert made.metric("sipmesh_tcp_local_reject_total", transport="tcp") == 1
    for w in (w1, w2, w3):
        w.close()


async def test_stop_closes_connections(make_manager: Any, kit: Any) -> None:
    made = await make_manager([TCP])
    reader, writer = await _connect(made.port("tcp"))
    writer.write(kit.options())
    await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    await made.manager.stop(0.1)
    assert await _closed_by_peer(reader)
    assert made.sink.closed[0] == made.sink.messages[0][1]
    with pytest.raises(OSError):
        await _connect(made.port("tcp"))
    writer.close()
