"""Transaction behaviour of the edge with real peers (issue 4).

- retransmitted INVITEs are absorbed by the server transaction: one relay, the last
  response repeated (RFC 3261 §17.2.1);
- a CANCELled INVITE gets a CANCEL on every branch of a parallel fork and the
  callees' 487 relayed to the caller (§16.10, §16.7); a callee deaf to the CANCEL
  leaves the caller with the edge's own 487 once the branch timer fires;
- a callee that rings and never answers ends in 408 after fr_inv_timer (timer C,
  §16.6 step 11 / §16.8), its branch CANCELled.

The caller is a raw UDP socket (exact control of retransmissions); it calls from a
foreign domain, which the default routing script relays to a local user without
authentication. Callees are sipp UAS scenarios with -trace_msg.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

from sipmesh.sip import Response
from tests.e2e.edge_peers import DOMAIN, UdpPeer, edge_process, received_requests
from tests.e2e.procs import SipmeshProcess, free_port
from tests.e2e.sipp import SCENARIOS, SippResult, run_sipp
from tests.e2e.test_edge_transports import inject, sipp_register, start_uas

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.timeout(120)]


class Caller:
    """A UDP caller from elsewhere.example to bob@sipmesh.test."""

    def __init__(self, proc: SipmeshProcess) -> None:
        self.peer = UdpPeer()
        self.edge = ("127.0.0.1", proc.sip_port)
        self.call_id = secrets.token_hex(8)
        self.tag = secrets.token_hex(4)
        self.branch = f"z9hG4bK{secrets.token_hex(8)}"
        host, port = self.peer.local
        self.via = f"SIP/2.0/UDP {host}:{port};branch={self.branch};rport"
        self.ruri = f"sip:bob@{DOMAIN}"

    def request(
        self, method: str, *, uri: str = "", via: str = "", to_tag: str = "", route: str = ""
    ) -> bytes:
        cseq = {"BYE": 2}.get(method, 1)
        host, port = self.peer.local
        lines = [
            f"{method} {uri or self.ruri} SIP/2.0",
            f"Via: {via or self.via}",
            *([f"Route: {route}"] if route else []),
            "Max-Forwards: 70",
            f"From: <sip:carol@elsewhere.example>;tag={self.tag}",
            f"To: <sip:bob@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:carol@{host}:{port}>",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def send(self, data: bytes) -> None:
        self.peer.send(data, self.edge)

    def expect(self, status: int, timeout: float = 10) -> Response:
        response = self.peer.response(timeout, status)
        assert response is not None, f"no {status} within {timeout} s"
        return response

    def collect(self, timeout: float) -> list[Response]:
        out = []
        while (response := self.peer.response(timeout)) is not None:
            out.append(response)
        return out

    def new_via(self) -> str:
        host, port = self.peer.local
        return f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)};rport"


def register_bob(proc: SipmeshProcess, workdir: Path, port: int) -> None:
    work = workdir / f"bob-{port}"
    work.mkdir(parents=True, exist_ok=True)
    reg = sipp_register(proc, work, "127.0.0.1", "bob", port, "u1")
    assert reg.returncode == 0, reg.output + proc.log()


def stop(proc: SipmeshProcess, *uas: subprocess.Popen[bytes]) -> None:
    for one in uas:
        if one.poll() is None:
            one.kill()
            one.wait(5)
    assert proc.stop() == 0, proc.log()


def test_retransmitted_invite_is_absorbed(workdir: Path) -> None:
    proc = edge_process(workdir, targets="edge,router,registrar")
    bob_port = free_port()
    register_bob(proc, workdir, bob_port)
    uas = start_uas(workdir, "127.0.0.1", bob_port, "edge_uas_slow.xml", "u1")
    caller = Caller(proc)
    try:
        invite = caller.request("INVITE")
        caller.send(invite)
        caller.expect(180)
        for _ in range(3):  # the same INVITE again, as Timer A would send it
            caller.send(invite)
        answers = caller.collect(timeout=3)
        ringing = [r for r in answers if r.status == 180]
        assert len(ringing) == 3, [r.status for r in answers]  # each answered with the last
        ok = next(r for r in answers if r.status == 200)
        contact = str(ok.contacts[0].uri)
        route = ok.get_all("Record-Route")[0]
        tag = ok.to.tag or ""
        caller.send(
            caller.request("ACK", uri=contact, via=caller.new_via(), to_tag=tag, route=route)
        )
        caller.send(
            caller.request("BYE", uri=contact, via=caller.new_via(), to_tag=tag, route=route)
        )
        caller.expect(200)
        assert uas.wait(10) == 0
        trace = workdir / f"uas-{bob_port}" / "msg.log"
        assert len(received_requests(trace, "INVITE")) == 1, "one relay of four INVITEs"
    finally:
        caller.peer.close()
        stop(proc, uas)


def test_cancel_reaches_every_branch_of_a_parallel_fork(workdir: Path) -> None:
    proc = edge_process(workdir, targets="edge,router,registrar")
    ports = [free_port(), free_port()]
    for port in ports:
        register_bob(proc, workdir, port)  # two contacts for one AOR: parallel fork
    uases = [start_uas(workdir, "127.0.0.1", p, "edge_uas_cancel.xml", "u1") for p in ports]
    caller = Caller(proc)
    try:
        caller.send(caller.request("INVITE"))
        caller.expect(180)
        for port in ports:  # both branches ring before the caller gives up
            trace = workdir / f"uas-{port}" / "msg.log"
            for _ in range(50):
                if trace.exists() and received_requests(trace, "INVITE"):
                    break
                caller.peer.response(0.1)
            assert received_requests(trace, "INVITE"), f"branch to {port} got the INVITE"
        caller.send(caller.request("CANCEL"))
        answers = caller.collect(timeout=3)
        statuses = sorted((r.cseq.method, r.status) for r in answers if r.status >= 200)
        assert ("CANCEL", 200) in statuses, statuses
        final = [r for r in answers if r.cseq.method == "INVITE" and r.status >= 200]
        assert [r.status for r in final][:1] == [487], statuses
        assert final[0].reason == "Terminated By UAS"  # a callee's, relayed
        caller.send(caller.request("ACK", to_tag=final[0].to.tag or ""))
        for port, uas in zip(ports, uases, strict=True):
            assert uas.wait(10) == 0, f"the branch to {port} was CANCELled and ACKed"
            trace = workdir / f"uas-{port}" / "msg.log"
            assert len(received_requests(trace, "CANCEL")) == 1
    finally:
        caller.peer.close()
        stop(proc, *uases)


def test_unanswered_invite_ends_in_408_after_fr_inv_timer(workdir: Path) -> None:
    proc = edge_process(
        workdir, targets="edge,router,registrar", env={"SIPMESH_EDGE__FR_INV_TIMER": "2"}
    )
    bob_port = free_port()
    register_bob(proc, workdir, bob_port)
    uas = start_uas(workdir, "127.0.0.1", bob_port, "edge_uas_cancel.xml", "u1")
    caller = Caller(proc)
    try:
        caller.send(caller.request("INVITE"))
        caller.expect(180)
        final = caller.expect(408, timeout=15)  # fr_inv_timer is 2 s; bounded wait
        caller.send(caller.request("ACK", to_tag=final.to.tag or ""))
        assert uas.wait(10) == 0, "the timed-out branch was CANCELled (tm's behaviour)"
        trace = workdir / f"uas-{bob_port}" / "msg.log"
        assert len(received_requests(trace, "CANCEL")) == 1
    finally:
        caller.peer.close()
        stop(proc, uas)


def cancelling_caller(proc: SipmeshProcess, workdir: Path, reason: str) -> SippResult:
    """A sipp caller that CANCELs while bob rings and needs "487 <reason>" back."""
    template = (SCENARIOS / "edge_cancel_caller.xml.in").read_text()
    scenario = workdir / "edge_cancel_caller.xml"
    scenario.write_text(template.replace("@REASON@", reason))
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=str(scenario),
        workdir=workdir / "caller",
        inf=inject(workdir, "caller.csv", f"carol;{DOMAIN};bob"),
        timeout=20,
    )
    assert isinstance(result, SippResult)
    return result


def test_the_callees_487_is_relayed_to_the_cancelling_caller(workdir: Path) -> None:
    """§16.10: the edge answers the CANCEL, CANCELs the ringing branch, and the 487
    the caller gets is the callee's ("487 Terminated By UAS"), not one of its own."""
    proc = edge_process(workdir, targets="edge,router,registrar")
    bob_port = free_port()
    register_bob(proc, workdir, bob_port)
    uas = start_uas(workdir, "127.0.0.1", bob_port, "edge_uas_cancel.xml", "u1")
    try:
        call = cancelling_caller(proc, workdir, "Terminated By UAS")
        assert (call.returncode, call.successful) == (0, 1), call.output + proc.log()
        assert uas.wait(10) == 0, "the callee got the CANCEL and the ACK of its 487"
    finally:
        stop(proc, uas)


def test_a_callee_deaf_to_the_cancel_leaves_the_caller_a_487(workdir: Path) -> None:
    """The callee takes the CANCEL and answers nothing: the branch gives up after
    fr_timer (2 s here; timer C stays at 120 s) and the caller gets the edge's own
    "487 Request Terminated", not 408, as tm answers a cancelled transaction."""
    proc = edge_process(
        workdir, targets="edge,router,registrar", env={"SIPMESH_EDGE__FR_TIMER": "2"}
    )
    bob_port = free_port()
    register_bob(proc, workdir, bob_port)
    uas = start_uas(workdir, "127.0.0.1", bob_port, "edge_uas_ignore_cancel.xml", "u1")
    try:
        call = cancelling_caller(proc, workdir, "Request Terminated")
        assert (call.returncode, call.successful) == (0, 1), call.output + proc.log()
        assert uas.wait(10) == 0, "the callee got the CANCEL"
        trace = workdir / f"uas-{bob_port}" / "msg.log"
        assert len(received_requests(trace, "CANCEL")) >= 1
    finally:
        stop(proc, uas)
