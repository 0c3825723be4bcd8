"""TLS listeners: server certificate, client-certificate verification, SNI, outgoing TLS."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

from sipmesh.edge.transport import TransportError

TLS = "tls:127.0.0.1:0"


def _tls_settings(certs: Any, **more: Any) -> dict[str, Any]:
    return {
        "tls_certificate": str(certs.server_cert),
        "tls_private_key": str(certs.server_key),
        "tls_ca_list": str(certs.ca),
        **more,
    }


def _client_ctx(certs: Any, *, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return ctx


async def test_tls_round_trip_flow_is_secure(make_manager: Any, kit: Any, certs: Any) -> None:
    sink = kit.Sink()
    made = await make_manager([TLS], sink, **_tls_settings(certs))
    sink.on_msg = lambda data, flow: made.manager.send(b"SIP/2.0 200 OK\r\n\r\n", flow)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", made.port("tls"), ssl=_client_ctx(certs, with_cert=False)
    )
    writer.write(b"\r\n\r\n" + kit.options())
    async with asyncio.timeout(5):
        assert await reader.readexactly(2) == b"\r\n"  # pong over TLS too
        assert await reader.readuntil(b"\r\n\r\n") == b"SIP/2.0 200 OK\r\n\r\n"
    flow = sink.messages[0][1]
    assert flow.transport == "tls"
    assert flow.secure
    assert flow.tls_peer_subject == ""
    assert made.metric("sipmesh_tls_opened_connections") == 1
    writer.close()


async def test_client_certificate_required(make_manager: Any, kit: Any, certs: Any) -> None:
    made = await make_manager([TLS], **_tls_settings(certs, tls_require_client_certificate=True))
    port = made.port("tls")

    # Without a certificate: the handshake fails or the server drops the connection.
    async def without_cert() -> None:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=_client_ctx(certs, with_cert=False)
            )
            try:
                writer.write(kit.options())
                await reader.readexactly(1)
            finally:
                writer.close()

    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await without_cert()
    assert made.sink.messages == []
    # With one signed by the CA: served, and the subject is on the flow.
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=_client_ctx(certs, with_cert=True)
    )
    writer.write(kit.options())
    await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
    subject = made.sink.messages[0][1].tls_peer_subject
    assert "CN=alice-phone" in subject
    assert "O=sipmesh tests" in subject
    writer.close()


async def test_client_certificate_optional(make_manager: Any, kit: Any, certs: Any) -> None:
    made = await make_manager([TLS], **_tls_settings(certs, tls_verify_client=True))
    for with_cert in (False, True):
        _, writer = await asyncio.open_connection(
            "127.0.0.1", made.port("tls"), ssl=_client_ctx(certs, with_cert=with_cert)
        )
        writer.write(kit.options())
        n = 2 if with_cert else 1
        await made.sink.wait_for(lambda n=n: len(made.sink.messages) == n)
        writer.close()
    subjects = [m[1].tls_peer_subject for m in made.sink.messages]
    assert subjects[0] == ""
    assert "CN=alice-phone" in subjects[1]


async def test_sni_picks_the_certificate(make_manager: Any, certs: Any) -> None:
    made = await make_manager(
        [TLS],
        **_tls_settings(
            certs, tls_sni_certificates=[f"sip.example.test={certs.alt_cert}:{certs.alt_key}"]
        ),
    )
    port = made.port("tls")
    seen = {}
    for name in ("sip.example.test", "127.0.0.1"):
        ctx = _client_ctx(certs, with_cert=False)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
        cert = writer.get_extra_info("peercert")
        seen[name] = dict(x[0] for x in cert["subject"])["commonName"]
        writer.close()
    assert seen == {"sip.example.test": "sip.example.test", "127.0.0.1": "127.0.0.1"}


async def test_outgoing_tls_verifies_the_server(make_manager: Any, certs: Any) -> None:
    server = await make_manager([TLS], **_tls_settings(certs))
    client = await make_manager(["tcp:127.0.0.1:0"], **_tls_settings(certs))
    port = server.port("tls")
    flow = await client.manager.send_to(b"OPTIONS sip:x SIP/2.0\r\n\r\n", "tls", "127.0.0.1", port)
    await server.sink.wait_for(lambda: len(server.sink.messages) == 1)
    assert flow.secure
    assert server.sink.messages[0][0] == b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    # A client trusting only the system CAs refuses the self-signed chain.
    strict = await make_manager(
        ["udp:127.0.0.1:0"],
        tls_certificate=str(certs.server_cert),
        tls_private_key=str(certs.server_key),
    )
    with pytest.raises(TransportError, match="tls connect"):
        await strict.manager.send_to(b"x", "tls", "127.0.0.1", port)
    # ... unless verification is switched off.
    lax = await make_manager(["udp:127.0.0.1:0"], tls_verify_server=False)
    await lax.manager.send_to(b"OPTIONS sip:y SIP/2.0\r\n\r\n", "tls", "127.0.0.1", port)
    await server.sink.wait_for(lambda: len(server.sink.messages) == 2)


async def test_tls_listener_without_certificate_fails_clearly(make_manager: Any) -> None:
    with pytest.raises(TransportError, match=r"tls:127.0.0.1:0: .*tls_certificate"):
        await make_manager([TLS])
    with pytest.raises(TransportError, match="cannot load certificate"):
        await make_manager([TLS], tls_certificate="/nonexistent.pem")
