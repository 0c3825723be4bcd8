"""SCTP: a working one-to-many listener where the kernel has SCTP, else a clear error."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from sipmesh.edge.transport import TransportError


def _kernel_has_sctp() -> bool:
    proto = getattr(socket, "IPPROTO_SCTP", None)
    if proto is None:
        return False
    try:
        socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, proto).close()
    except OSError:
        return False
    return True


async def test_sctp_works_or_fails_clearly(make_manager: Any, kit: Any) -> None:
    if not _kernel_has_sctp():
        with pytest.raises(TransportError) as info:
            await make_manager(["udp:127.0.0.1:0", "sctp:127.0.0.1:0"])
        message = str(info.value)
        assert message.startswith("sctp:127.0.0.1:0: SCTP not supported by this kernel (")
        return
    made = await make_manager(["sctp:127.0.0.1:0"])
    port = made.port("sctp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
    try:
        sock.sendto(kit.options(), ("127.0.0.1", port))
        await made.sink.wait_for(lambda: len(made.sink.messages) == 1)
        flow = made.sink.messages[0][1]
        assert flow.transport == "sctp"
        made.manager.send(b"SIP/2.0 200 OK\r\n\r\n", flow)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            data = await loop.run_in_executor(None, sock.recv, 65536)
        assert data == b"SIP/2.0 200 OK\r\n\r\n"
    finally:
        sock.close()


async def test_failed_start_releases_bound_listeners(make_manager: Any) -> None:
    # The second listener cannot start (bad certificate): the first is released.
    first = await make_manager(["udp:127.0.0.1:0"], reuse_port=False)
    port = first.port("udp")
    await first.manager.stop(0)
    with pytest.raises(TransportError):
        await make_manager([f"udp:127.0.0.1:{port}", "tls:127.0.0.1:0"])
    again = await make_manager([f"udp:127.0.0.1:{port}"])
    assert again.port("udp") == port
