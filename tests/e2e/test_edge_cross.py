"""Calls across transports through a running sipmesh (issue 4): double Record-Route.

RFC 3261 §16.6 step 4 with RFC 5658: when the edge receives a call over one
transport and relays it over another, it inserts two Record-Route entries, the one
facing the callee on top. The callee's route set is then [outbound, inbound] and the
caller's (reversed) [inbound, outbound]; a BYE from either side must route back
through both.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.e2e.edge_peers import (
    DOMAIN,
    MiniUA,
    WsChannel,
    edge_process,
    header_lines,
    nameaddr_params,
    received_requests,
)
from tests.e2e.procs import SipmeshProcess, free_port
from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_edge_transports import inject, sipp_register, start_uas

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.timeout(120)]


def check_double_rr(values: list[str], outbound: tuple[str, int], inbound_port: int) -> None:
    """[outbound (transport param), inbound (UDP: no param)], both r2=on and lr."""
    assert len(values) == 2, values
    top, second = (nameaddr_params(v) for v in values)
    assert top[0] == f"127.0.0.1:{outbound[1]}", values
    assert top[1].get("transport") == outbound[0], values
    assert second[0] == f"127.0.0.1:{inbound_port}", values
    assert second[1].get("transport", "udp") == "udp", values
    for _, params in (top, second):
        assert "lr" in params
        assert params.get("r2") == "on", values


def udp_call(proc: SipmeshProcess, workdir: Path, scenario: str, tag: str) -> SippResult:
    call = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / f"caller-{tag}",
        inf=inject(workdir, f"call-{tag}.csv", f"alice;{DOMAIN};bob"),
        transport="u1",
        extra=["-au", "alice", "-ap", "alice-pw"],
        timeout=20,
    )
    assert isinstance(call, SippResult)
    return call


@pytest.mark.parametrize("callee_hangs_up", [False, True], ids=["caller-bye", "callee-bye"])
def test_udp_caller_tcp_callee(workdir: Path, callee_hangs_up: bool) -> None:
    proc = edge_process(workdir)
    uas: subprocess.Popen[bytes] | None = None
    try:
        bob_port = free_port()
        reg = sipp_register(proc, workdir, "127.0.0.1", "bob", bob_port, "t1")
        assert reg.returncode == 0, reg.output + proc.log()
        scenario = "edge_uas_bye.xml" if callee_hangs_up else "uas_answer.xml"
        uas = start_uas(workdir, "127.0.0.1", bob_port, scenario, "t1")
        caller = "edge_call_recv_bye.xml" if callee_hangs_up else "call_auth.xml"
        call = udp_call(proc, workdir, caller, "udp")
        assert call.returncode == 0, call.output + proc.log()
        assert call.successful == 1
        assert uas.wait(15) == 0, "the callee saw the whole call, BYE included"
        trace = workdir / f"uas-{bob_port}" / "msg.log"
        invites = received_requests(trace, "INVITE")
        assert len(invites) == 1
        rr = header_lines(invites[0], "Record-Route")
        check_double_rr(rr, ("tcp", proc.sip_port), proc.sip_port)
        # The callee's BYE (callee-bye) or the caller's (caller-bye) came back through.
        assert len(received_requests(trace, "BYE")) == (0 if callee_hangs_up else 1)
        assert len(received_requests(trace, "ACK")) == 1
    finally:
        if uas is not None and uas.poll() is None:
            uas.kill()
            uas.wait(5)
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("callee_hangs_up", [False, True], ids=["caller-bye", "callee-bye"])
async def test_udp_caller_ws_callee(workdir: Path, callee_hangs_up: bool) -> None:
    proc = edge_process(workdir, transports=("udp", "tcp", "ws"))
    ws_port = proc.extra["ws"]
    bob = MiniUA(await WsChannel.open(f"ws://127.0.0.1:{ws_port}"), "bob", "bob-pw")
    try:
        assert (await bob.register()).status == 200, proc.log()
        answering = asyncio.ensure_future(bob.answer(timeout=20))
        caller = "edge_call_recv_bye.xml" if callee_hangs_up else "call_auth.xml"
        call_task = asyncio.ensure_future(asyncio.to_thread(udp_call, proc, workdir, caller, "ws"))
        invite, dialog = await answering
        check_double_rr(invite.get_all("Record-Route"), ("ws", ws_port), proc.sip_port)
        assert dialog.route_set[0].startswith(f"sip:127.0.0.1:{ws_port};transport=ws")
        if callee_hangs_up:
            bye_ok = await bob.bye(dialog)
            assert bye_ok.status == 200, "the caller answered the BYE routed back over UDP"
        else:
            bye = await bob.answer_bye(timeout=20)
            # The caller's BYE carries the edge's two entries as Route, popped by the
            # edge: what reaches the callee has no Route left (RFC 3261 §16.12).
            assert bye.get("Route") is None
        call = await call_task
        assert call.returncode == 0, call.output + proc.log()
        assert call.successful == 1
    finally:
        await bob.close()
        assert proc.stop() == 0, proc.log()
