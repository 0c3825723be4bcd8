"""OPTIONS, REGISTER and full calls through a running sipmesh over every transport (issue 4).

UDP and TCP (IPv4 and IPv6 on ::1) are driven by sipp and sipsak; TLS and WebSocket
by MiniUA (tests/e2e/edge_peers.py: sipp here has neither TLS nor WS).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.edge_peers import (
    DOMAIN,
    MiniUA,
    StreamChannel,
    WsChannel,
    edge_process,
    nameaddr_params,
    received_requests,
    sipsak_options,
)
from tests.e2e.procs import SipmeshProcess, free_port
from tests.e2e.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.timeout(120)]


def inject(workdir: Path, name: str, *rows: str) -> Path:
    path = workdir / name
    path.write_text("SEQUENTIAL\n" + "".join(f"{row}\n" for row in rows))
    return path


def shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def sipp_options(proc: SipmeshProcess, workdir: Path, host: str, transport: str) -> SippResult:
    result = run_sipp(
        f"{shown(host)}:{proc.sip_port}",
        scenario="edge_options.xml",
        workdir=workdir / f"options-{transport}",
        transport=transport,
        timeout=10,
    )
    assert isinstance(result, SippResult)
    return result


def sipp_register(
    proc: SipmeshProcess, workdir: Path, host: str, user: str, port: int, transport: str
) -> SippResult:
    result = run_sipp(
        f"{shown(host)}:{proc.sip_port}",
        scenario="register_auth.xml",
        workdir=workdir / f"reg-{user}-{transport}",
        inf=inject(workdir, f"reg-{user}.csv", f"{user};{DOMAIN}"),
        local_port=port,
        transport=transport,
        extra=["-au", user, "-ap", f"{user}-pw"],
        timeout=10,
    )
    assert isinstance(result, SippResult)
    return result


def start_uas(
    workdir: Path, host: str, port: int, scenario: str, transport: str
) -> subprocess.Popen[bytes]:
    work = workdir / f"uas-{port}"
    work.mkdir(parents=True, exist_ok=True)
    cmd = ["sipp", "-sf", str(Path(__file__).parent / "scenarios" / scenario)]
    cmd += ["-i", host, "-p", str(port), "-t", transport, "-nostdin", "-m", "1"]
    cmd += ["-timeout", "30s", "-trace_msg", "-message_file", str(work / "msg.log")]
    cmd += ["-trace_err", "-error_file", str(work / "err.log")]
    uas = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # sipp binds its socket
    return uas


def sipp_call(
    proc: SipmeshProcess, workdir: Path, host: str, transport: str, scenario: str = "call_auth.xml"
) -> SippResult:
    call = run_sipp(
        f"{shown(host)}:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / f"caller-{transport}",
        inf=inject(workdir, "call.csv", f"alice;{DOMAIN};bob"),
        transport=transport,
        extra=["-au", "alice", "-ap", "alice-pw"],
        timeout=20,
    )
    assert isinstance(call, SippResult)
    return call


@pytest.mark.parametrize(
    ("host", "transport"),
    [("127.0.0.1", "u1"), ("127.0.0.1", "t1"), ("::1", "u1"), ("::1", "t1")],
    ids=["udp4", "tcp4", "udp6", "tcp6"],
)
def test_options_register_and_call_with_sipp(workdir: Path, host: str, transport: str) -> None:
    """sipsak and sipp OPTIONS get 200; bob registers; alice calls bob, bob hangs up."""
    proc = edge_process(workdir, host=host)
    uas: subprocess.Popen[bytes] | None = None
    proto = "udp" if transport == "u1" else "tcp"
    try:
        if ":" not in host:  # sipsak 0.9.8 has no IPv6 (it cannot parse "[::1]")
            assert sipsak_options(host, proc.sip_port, proto).startswith("SIP/2.0 200")
        options = sipp_options(proc, workdir, host, transport)
        assert options.returncode == 0, options.output + proc.log()
        bob_port = free_port(host=host)
        reg = sipp_register(proc, workdir, host, "bob", bob_port, transport)
        assert reg.returncode == 0, reg.output + proc.log()
        assert reg.successful == 1
        uas = start_uas(workdir, host, bob_port, "edge_uas_bye.xml", transport)
        call = sipp_call(proc, workdir, host, transport, "edge_call_recv_bye.xml")
        assert call.returncode == 0, call.output + proc.log()
        assert call.successful == 1
        assert uas.wait(15) == 0, "the callee's BYE was answered through the edge"
        invites = received_requests(workdir / f"uas-{bob_port}" / "msg.log", "INVITE")
        assert len(invites) == 1
        # Same transport both sides: one Record-Route naming the edge (RFC 3261 §16.6 step 4).
        rr = [line for line in invites[0].splitlines() if line.lower().startswith("record-route")]
        assert len(rr) == 1, invites[0]
        assert f"{shown(host)}:{proc.sip_port}" in rr[0], invites[0]
        assert ";lr" in rr[0]
        assert (";transport=tcp" in rr[0]) == (proto == "tcp"), rr[0]
    finally:
        if uas is not None and uas.poll() is None:
            uas.kill()
            uas.wait(5)
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("transport", ["tls", "ws"])
async def test_options_register_and_call_over_tls_and_ws(workdir: Path, transport: str) -> None:
    """Two user agents on TLS (or WS) connections: OPTIONS, REGISTER, call, BYE both ways."""
    proc = edge_process(workdir, transports=("udp", "tcp", transport))
    port = proc.extra[transport]

    async def connect() -> StreamChannel | WsChannel:
        if transport == "ws":
            return await WsChannel.open(f"ws://127.0.0.1:{port}")
        return await StreamChannel.open("127.0.0.1", port, tls=True)

    alice = MiniUA(await connect(), "alice", "alice-pw")
    bob = MiniUA(await connect(), "bob", "bob-pw")
    try:
        options = await alice.options(f"sip:127.0.0.1:{port};transport={transport}")
        assert options.status == 200, proc.log()
        for ua in (alice, bob):
            reg = await ua.register()
            assert reg.status == 200, f"{reg.status} {proc.log()}"
            assert reg.contacts, "the 200 lists the binding (RFC 3261 §10.3 step 8)"
        for hangup_by_callee in (False, True):
            answering = asyncio.ensure_future(bob.answer())
            ok, caller_dialog = await alice.call(f"sip:bob@{DOMAIN}")
            invite, callee_dialog = await answering
            rr = invite.get_all("Record-Route")
            assert len(rr) == 1, rr  # in and out over the same transport: one entry
            hostport, params = nameaddr_params(rr[0])
            assert hostport == f"127.0.0.1:{port}"
            assert params.get("transport") == transport
            assert "lr" in params
            assert ok.get_all("Record-Route") == rr
            if hangup_by_callee:
                answered = asyncio.ensure_future(alice.answer_bye())
                assert (await bob.bye(callee_dialog)).status == 200
                await answered
            else:
                answered = asyncio.ensure_future(bob.answer_bye())
                assert (await alice.bye(caller_dialog)).status == 200
                await answered
    finally:
        await alice.close()
        await bob.close()
        assert proc.stop() == 0, proc.log()
