"""WebSocket and secure WebSocket (RFC 7118) with the websockets client."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from sipmesh.edge.transport import TransportError

SIP = [Subprotocol("sip")]


def _echo_200(made: Any) -> Any:
    return lambda data, flow: made.manager.send(
        b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", flow
    )


async def test_ws_round_trip_one_message_per_frame(make_manager: Any, kit: Any) -> None:
    sink = kit.Sink()
    made = await make_manager(["ws:127.0.0.1:0"], sink)
    sink.on_msg = _echo_200(made)
    url = f"ws://127.0.0.1:{made.port('ws')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP) as ws:
        assert ws.subprotocol == "sip"
        await ws.send(kit.options(1).decode())  # text frame
        reply = await ws.recv()
        await ws.send(kit.options(2))  # binary frame
        reply2 = await ws.recv()
        await ws.send("\r\n\r\n")  # keep-alive frame: pong, not passed up
        pong = await ws.recv()
    assert reply == reply2 == "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert pong == "\r\n"
    assert [m[0] for m in sink.messages] == [kit.options(1), kit.options(2)]
    flow = sink.messages[0][1]
    assert flow.transport == "ws"
    assert flow.reliable
    assert not flow.secure
    await sink.wait_for(lambda: sink.closed == [flow])
    assert made.metric("sipmesh_ws_current_connections") == 0


async def test_ws_without_sip_subprotocol_is_refused(make_manager: Any) -> None:
    made = await make_manager(["ws:127.0.0.1:0"])
    url = f"ws://127.0.0.1:{made.port('ws')}/"
    for protocols in (None, [Subprotocol("chat")]):
        with pytest.raises(InvalidStatus) as info:
            async with asyncio.timeout(10), connect(url, subprotocols=protocols):
                pass
        assert info.value.response.status_code == 400
    assert made.manager.flows() == []


async def test_ws_origin_allow_list(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["ws:127.0.0.1:0"], ws_origins=["https://phone.example.com"])
    url = f"ws://127.0.0.1:{made.port('ws')}/"
    with pytest.raises(InvalidStatus) as info:
        async with (
            asyncio.timeout(10),
            connect(url, subprotocols=SIP, origin=Origin("https://evil.example.net")),
        ):
            pass
    assert info.value.response.status_code == 403
    async with (
        asyncio.timeout(10),
        connect(url, subprotocols=SIP, origin=Origin("https://phone.example.com")) as ws,
    ):
        await ws.send(kit.options())
        await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    assert made.sink.messages[0][1].ws_origin == "https://phone.example.com"


async def test_ws_oversize_frame_closes(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["ws:127.0.0.1:0"], max_message_size=4096)
    url = f"ws://127.0.0.1:{made.port('ws')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP) as ws:
        await ws.send(kit.options(1, b"x" * 8000))
        await ws.wait_closed()
    assert ws.close_code == 1009
    assert made.sink.messages == []
    await made.sink.wait_for(lambda: len(made.sink.closed) == 1)
    assert made.metric("sipmesh_drop_oversize_messages_total", transport="ws") == 1


async def test_wss_round_trip(make_manager: Any, kit: Any, certs: Any) -> None:
    sink = kit.Sink()
    made = await make_manager(
        ["wss:127.0.0.1:0"],
        sink,
        tls_certificate=str(certs.server_cert),
        tls_private_key=str(certs.server_key),
    )
    sink.on_msg = _echo_200(made)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    url = f"wss://127.0.0.1:{made.port('wss')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP, ssl=ctx) as ws:
        await ws.send(kit.options())
        reply = await ws.recv()
        assert made.metric("sipmesh_tls_opened_connections") == 1
    assert str(reply).startswith("SIP/2.0 200 OK")
    flow = sink.messages[0][1]
    assert flow.transport == "wss"
    assert flow.secure


async def test_send_to_ws_reuses_client_connection_or_dials(make_manager: Any, kit: Any) -> None:
    server = await make_manager(["ws:127.0.0.1:0"])
    url = f"ws://127.0.0.1:{server.port('ws')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP) as ws:
        await ws.send(kit.options())
        await server.sink.wait_for(lambda: len(server.sink.messages) == 1)
        flow = server.sink.messages[0][1]
        # A request towards the WS client leaves over its connection.
        sent = await server.manager.send_to(b"MESSAGE", "ws", *flow.remote)
        assert sent == flow
        assert await ws.recv() == "MESSAGE"
        # By flow id as well.
        await server.manager.send_to(b"NOTIFY", "ws", "192.0.2.1", 9, flow_id=flow.flow_id)
        assert await ws.recv() == "NOTIFY"
    await server.sink.wait_for(lambda: len(server.sink.closed) == 1)
    with pytest.raises(TransportError):
        server.manager.send(b"x", flow)
    # Towards a WS server (another proxy), a connection is dialled.
    client = await make_manager(["udp:127.0.0.1:0"])
    out = await client.manager.send_to(kit.options(9), "ws", "127.0.0.1", server.port("ws"))
    await server.sink.wait_for(lambda: len(server.sink.messages) == 2)
    assert server.sink.messages[1][0] == kit.options(9)
    assert out.transport == "ws"
    assert client.manager.flow(out.flow_id) == out


async def test_ws_idle_lifetime_and_stop(make_manager: Any, kit: Any) -> None:
    made = await make_manager(["ws:127.0.0.1:0"], tcp_connection_lifetime=0.3)
    url = f"ws://127.0.0.1:{made.port('ws')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP) as ws:
        await ws.send(kit.options())
        await ws.wait_closed()  # idle past the lifetime: the server closes
    assert ws.close_code == 1000
    assert made.metric("sipmesh_tcp_con_timeout_total", transport="ws") == 1
    other = await make_manager(["ws:127.0.0.1:0"])
    url = f"ws://127.0.0.1:{other.port('ws')}/"
    async with asyncio.timeout(10), connect(url, subprotocols=SIP) as ws:
        await ws.send(kit.options())
        await other.sink.wait_for(lambda: len(other.sink.messages) == 1)
        await other.manager.stop(0.1)
        await ws.wait_closed()
    assert other.sink.closed == [other.sink.messages[0][1]]
