"""Dispatcher and LCR through real `sipmesh serve` processes and sipp (issue 7).

A small custom routing script (written by the test, named by `router.script`) sends
INVITEs from trusted sources (the `address` table, group 1) to dispatcher set 1 with
``ctx.ds.select(1, alg)`` and fails over with ``ctx.ds.next()`` on 408/5xx in its
failure route — Kamailio's dispatcher example, route for route. Numbers (an R-URI
user of digits) go to least-cost routing instead: ``ctx.lcr.load_gws(1)`` and
``ctx.lcr.next_gw()``. The destinations and gateways are sipp UAS on 127.0.0.1,
provisioned with `sipmesh ctl dispatcher add` / `lcr gw-add …` through the admin API
and loaded with `sipmesh ctl dispatcher reload` / `lcr reload`.

Each UAS writes the messages it receives (sipp -trace_msg), so the calls it got are
counted where they arrived; the callers' sipp statistics give the calls that
succeeded. Waiting for a state (probing) polls `sipmesh ctl dispatcher show` with a
bound; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest
import yaml

from tests.e2e.procs import SIPMESH, SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.slow]

DOMAIN = "sipmesh.test"
TARGETS = "edge,router,registrar,admin"

# The routing script: ALG and MARK are filled in per test.
SCRIPT = '''
"""Dispatcher set 1 for trusted INVITEs, LCR for numbers (tests/e2e/test_dispatcher_sipp.py)."""
from sipmesh.router.api import Ctx

ALG = {alg}
MARK = {mark}


def request_route(ctx: Ctx) -> None:
    if ctx.has_totag():
        # In-dialog requests follow the Record-Route path (route WITHINDLG).
        if ctx.loose_route():
            if ctx.is_method("ACK"):
                ctx.forward()
            else:
                ctx.relay()
            return
        if ctx.is_method("ACK"):
            ctx.drop("ACK without transaction")
            return
        ctx.sl_send_reply(404, "Not here")
        return
    if ctx.is_method("CANCEL"):
        ctx.drop("CANCEL without transaction")
        return
    if not ctx.is_method("INVITE"):
        ctx.sl_send_reply(405, "Method Not Allowed")
        return
    if not ctx.allow_source_address(1):
        ctx.sl_send_reply(403, "Not trusted")
        return
    ctx.remove_hf("Route")
    ctx.record_route()
    if ctx.ruser.isdigit():
        if not ctx.lcr.load_gws(1) or not ctx.lcr.next_gw():
            ctx.sl_send_reply(404, "No route")
            return
        ctx.t_on_failure("lcr_failover")
        ctx.relay()
        return
    if not ctx.ds.select(1, ALG):  # ds_select_dst("1", ALG)
        ctx.sl_send_reply(503, "No destination")
        return
    ctx.t_on_failure("ds_failover")
    ctx.relay(ctx.ds.target())


def ds_failover(ctx: Ctx) -> None:
    if ctx.t_is_canceled() or not ctx.ds.should_failover():  # 5xx or 408
        return
    if MARK:
        ctx.ds.mark("ip")  # ds_mark_dst("ip")
    if ctx.ds.next():  # ds_next_dst()
        ctx.t_on_failure("ds_failover")
        ctx.relay(ctx.ds.target())


def lcr_failover(ctx: Ctx) -> None:
    if not ctx.t_is_canceled() and ctx.lcr.should_failover() and ctx.lcr.next_gw():
        ctx.t_on_failure("lcr_failover")
        ctx.relay()
'''

# A caller without credentials (the script trusts its address): INVITE, 200, ACK
# and BYE along the route set the 200 brought (RFC 3261 §12.1.2).
CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="trusted caller">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@@DOMAIN@ SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@@DOMAIN@>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@@DOMAIN@>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:caller@@DOMAIN@>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@@DOMAIN@>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="50"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:caller@@DOMAIN@>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@@DOMAIN@>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
""".replace("@DOMAIN@", DOMAIN)

# A destination: answers OPTIONS probes with 200 (RFC 3261 §11) and calls with
# 180/200, mirroring the Record-Route so the caller's ACK and BYE cross the proxy.
UAS_ANSWER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="dispatcher destination">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE" rrs="true"/>
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]>
  </send>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=uas 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send next="end">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="options"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="end"/>
</scenario>
"""

# A destination that is up but refuses calls: 503 to INVITE (then the proxy's ACK,
# RFC 3261 §17.1.1.3), 200 to OPTIONS.
UAS_503 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="dispatcher destination refusing calls">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE"/>
  <send next="ack">
    <![CDATA[
SIP/2.0 503 Service Unavailable
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="options"/>
  <send next="end">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag02[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="ack"/>
  <recv request="ACK"/>
  <label id="end"/>
</scenario>
"""


def scenario(workdir: Path, name: str, text: str) -> str:
    path = workdir / name
    path.write_text(text)
    return str(path)


class Uas:
    """A sipp UAS on 127.0.0.1 (a destination or gateway) tracing what it receives."""

    def __init__(self, workdir: Path, name: str, text: str, port: int = 0) -> None:
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.messages = workdir / f"{name}-messages.log"
        proc = run_sipp(
            "",
            scenario=scenario(workdir, f"{name}.xml", text),
            workdir=workdir / f"uas-{name}",
            local_port=self.port,
            background=True,
            timeout=300,
            # A Call-ID sent again (hash test) is a new call, not one just ended.
            extra=["-trace_msg", "-message_file", str(self.messages), "-deadcall_wait", "10"],
        )
        assert isinstance(proc, subprocess.Popen)
        self.proc = proc
        time.sleep(0.3)  # sipp binds its socket

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def received(self) -> str:
        try:
            return self.messages.read_text(errors="replace")
        except OSError:
            return ""

    def invites(self, tag: str = "") -> set[tuple[str, str]]:
        """(Call-ID, branch) of the INVITEs received whose Call-ID contains `tag`:
        each branch the proxy sent once, whatever its retransmissions."""
        found = set()
        for message in self.received().split("-" * 47)[1:]:
            lines = message.split("\n", 2)[-1].strip().splitlines()
            if not lines or not lines[0].startswith("INVITE "):
                continue
            call_id = branch = ""
            for line in lines:
                name, _, value = line.partition(":")
                if name.lower() == "call-id":
                    call_id = value.strip()
                elif name.lower() == "via" and not branch:
                    branch = value.split("branch=", 1)[-1].split(";")[0]
            if tag in call_id:
                found.add((call_id, branch))
        return found

    def calls(self, tag: str = "") -> set[str]:
        """Call-IDs of the INVITEs received whose Call-ID contains `tag`."""
        return {call_id for call_id, _ in self.invites(tag)}

    def request_uris(self, tag: str = "") -> list[str]:
        return sorted(
            {
                line.strip()
                for message in self.received().split("-" * 47)[1:]
                if tag in message
                for line in message.splitlines()
                if line.startswith("INVITE ")
            }
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def uases(workdir: Path) -> Iterator[list[Uas]]:
    started: list[Uas] = []
    yield started
    for uas in started:
        uas.stop()


def start_uas(uases: list[Uas], workdir: Path, name: str, text: str, port: int = 0) -> Uas:
    uas = Uas(workdir, name, text, port)
    uases.append(uas)
    return uas


def routing_config(
    workdir: Path,
    *,
    alg: int,
    mark: bool = False,
    router: Mapping[str, object] | None = None,
    fr_timer: float = 3.0,
) -> dict[str, object]:
    """The YAML config of a process running the test's routing script.

    `fr_timer`: how long a branch to a destination that does not answer at all waits
    before it counts as 408 (short where a test kills one; long enough elsewhere that
    a slow moment of a loaded machine is not a failover).
    """
    script = workdir / f"ds_routing_{alg}_{int(mark)}.py"
    script.write_text(SCRIPT.format(alg=alg, mark=mark))
    return {
        "router": {"script": str(script), "ds_ping_interval": 0, **(router or {})},
        # One address places every call: keep the anti-flood check out of it.
        "edge": {"trusted_sources": ["127.0.0.1"], "fr_timer": fr_timer, "fr_inv_timer": 10.0},
    }


def start_core(workdir: Path, config: dict[str, object]) -> SipmeshProcess:
    path = workdir / "sipmesh.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = make_process(
        "core", workdir, targets=TARGETS, extra_args=["--domain", DOMAIN, "--config", str(path)]
    )
    proc.start()
    try:
        proc.wait_ready()
        trust(proc)
    except BaseException:
        proc.kill()
        raise
    return proc


def admin(proc: SipmeshProcess, *argv: str) -> str:
    """`sipmesh ctl` through the admin API of a running process."""
    return ctl("--admin", f"127.0.0.1:{proc.grpc_port}", "--domain", DOMAIN, *argv)


def reloaded_everywhere(text: str, instances: int = 1) -> None:
    assert text.count(": ok") == instances, text
    assert "FAILED" not in text, text


def trust(proc: SipmeshProcess) -> None:
    """The callers' address in group 1 of the address table (allow_source_address)."""
    admin(proc, "address", "add", "1", "127.0.0.1")
    reloaded_everywhere(admin(proc, "reload"))


def provision(
    proc: SipmeshProcess, dests: list[Uas], attrs: list[str] | None = None, instances: int = 1
) -> None:
    """Destinations of set 1 with `sipmesh ctl dispatcher add`, then `dispatcher reload`."""
    for i, dest in enumerate(dests):
        argv = ["dispatcher", "add", "1", dest.uri, "0", "0"]
        if attrs:
            argv.append(attrs[i])
        admin(proc, *argv)
    reloaded_everywhere(admin(proc, "dispatcher", "reload"), instances)


def states(proc: SipmeshProcess) -> dict[str, str]:
    """destination -> state, as `sipmesh ctl dispatcher show` prints them."""
    shown = admin(proc, "dispatcher", "show", "1")
    out = {}
    for line in shown.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[1].startswith("sip:"):
            out[fields[1]] = fields[2]
    return out


def wait_state(proc: SipmeshProcess, dest: Uas, state: str, timeout: float = 30.0) -> None:
    """Poll `dispatcher show` until `dest` is in `state` (bounded)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = states(proc)
        if seen.get(dest.uri) == state:
            return
        time.sleep(0.25)
    raise AssertionError(f"{dest.uri} never {state}: {seen}\n{proc.log()}")


def place(
    proc: SipmeshProcess,
    workdir: Path,
    calls: int,
    *,
    user: str = "ds",
    rate: float = 20,
    call_id: str = "",
) -> str:
    """`calls` calls from a trusted caller through the edge, all answered.

    Returns the tag in their Call-IDs (or `call_id` itself, for one call with a
    Call-ID of the test's choosing) to count where they arrived.
    """
    tag = call_id or f"run{time.monotonic_ns()}"
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario(workdir, "ds_caller.xml", CALLER),
        workdir=workdir / f"caller-{time.monotonic_ns()}",
        local_port=free_port(),
        calls=calls,
        rate=rate,
        extra=["-s", user, "-l", "10", "-cid_str", call_id or f"{tag}-%u-%p@%s"],
        timeout=40,
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + proc.log()
    assert (result.successful, result.failed) == (calls, 0), result.output
    return tag


def spread(
    dests: list[Uas], tag: str, total: int, timeout: float = 10.0, *, branches: bool = False
) -> list[int]:
    """Calls (distinct Call-IDs; with `branches` every INVITE branch the proxy sent) of
    the run `tag` per destination, once `total` are in the traces (a UAS writes each
    message as it comes; bounded wait)."""

    def count() -> list[int]:
        return [len(d.invites(tag) if branches else d.calls(tag)) for d in dests]

    deadline = time.monotonic() + timeout
    seen = count()
    while sum(seen) < total and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = count()
    return seen


def three(uases: list[Uas], workdir: Path, *texts: str) -> list[Uas]:
    return [start_uas(uases, workdir, f"d{i}", text) for i, text in enumerate(texts)]


# -- distribution ------------------------------------------------------------------------


def test_round_robin_evens_out_thirty_calls(workdir: Path, uases: list[Uas]) -> None:
    core = start_core(workdir, routing_config(workdir, alg=4))
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(core, dests)
        assert states(core) == {d.uri: "AP" for d in dests}
        tag = place(core, workdir, 30)
        got = spread(dests, tag, 30)
        assert sum(got) == 30, got
        assert all(9 <= n <= 11 for n in got), got
        # Every INVITE keeps the caller's R-URI and is sent to the destination ($du).
        assert dests[0].request_uris(tag) == [f"INVITE sip:ds@{DOMAIN} SIP/2.0"]
    finally:
        assert core.stop() == 0, core.log()


def test_hash_over_call_id_keeps_a_call_id_on_one_destination(
    workdir: Path, uases: list[Uas]
) -> None:
    core = start_core(workdir, routing_config(workdir, alg=0))
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(core, dests)
        call_ids = [f"dshash{n}x{time.monotonic_ns()}@127.0.0.1" for n in range(8)]
        for _round in range(3):
            for call_id in call_ids:
                # One sipp run per call: sipp keeps one call per Call-ID.
                place(core, workdir, 1, call_id=call_id)
        places = {}
        for call_id in call_ids:
            got = spread(dests, call_id, 3, branches=True)
            # The same Call-ID sent three times landed three times on one destination.
            assert sorted(got) == [0, 0, 3], (call_id, got)
            places[call_id] = got.index(3)
        # Different Call-IDs spread over the set.
        assert len(set(places.values())) >= 2, places
    finally:
        assert core.stop() == 0, core.log()


def test_weights_hold_within_tolerance(workdir: Path, uases: list[Uas]) -> None:
    core = start_core(workdir, routing_config(workdir, alg=9))
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(core, dests, attrs=["weight=50", "weight=30", "weight=20"])
        tag = place(core, workdir, 100, rate=40)
        got = spread(dests, tag, 100)
        assert sum(got) == 100, got
        for n, want in zip(got, (50, 30, 20), strict=True):
            assert abs(n - want) <= 5, got
    finally:
        assert core.stop() == 0, core.log()


# -- failover ----------------------------------------------------------------------------


def test_destination_answering_503_is_failed_over_by_the_failure_route(
    workdir: Path, uases: list[Uas]
) -> None:
    """Kamailio's example without ds_mark_dst: each call that picked the refusing
    destination first moves on to the next one (ds_next_dst) and is answered there."""
    core = start_core(workdir, routing_config(workdir, alg=4))
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_503, UAS_ANSWER)
        provision(core, dests)
        tag = place(core, workdir, 30)
        # Round-robin starts 10 calls on each; the 10 refused ones continue on the
        # destination after the refusing one in set order.
        assert spread(dests, tag, 40) == [10, 10, 20]
        assert "SIP/2.0 503" not in dests[0].received() + dests[2].received()
        assert states(core)[dests[1].uri] == "AP"  # nobody marked it
    finally:
        assert core.stop() == 0, core.log()


def test_killed_destination_fails_over_is_marked_and_probing_brings_it_back(
    workdir: Path, uases: list[Uas]
) -> None:
    """ds_mark_dst("ip") in the failure route takes a destination that stopped
    answering out; probing of inactive destinations (ds_probing_mode 0) puts it back
    once it answers OPTIONS again, and new calls reach it."""
    router = {
        "ds_ping_interval": 0.5,
        "ds_ping_timeout": 0.5,
        "ds_probing_mode": 0,
        "ds_inactive_threshold": 2,
    }
    config = routing_config(workdir, alg=4, mark=True, router=router, fr_timer=1.5)
    core = start_core(workdir, config)
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(core, dests)
        victim = dests[1]
        victim.stop()
        # Probing mode 0 leaves active destinations alone: only a call can find out.
        assert states(core)[victim.uri] == "AP"
        tag = place(core, workdir, 9, rate=5)
        # The branch to the dead one timed out (408); the failure route marked it and
        # went on to the next destination; later calls skipped it.
        assert states(core)[victim.uri] == "IP"
        assert sum(spread([dests[0], dests[2]], tag, 9)) == 9
        relays = metric(core, "sipmesh_router_decisions_total", kind="failure", action="relay")
        assert relays >= 1, core.metrics()

        # Back on the same port: the prober sees two answers and activates it.
        back = start_uas(uases, workdir, "d1b", UAS_ANSWER, victim.port)
        wait_state(core, back, "AP")
        tag = place(core, workdir, 6, rate=5)
        assert spread([dests[0], back, dests[2]], tag, 6) == [2, 2, 2]
    finally:
        assert core.stop() == 0, core.log()


def test_probing_marks_a_dead_destination_inactive_and_active_again(
    workdir: Path, uases: list[Uas]
) -> None:
    """Probing every destination (ds_probing_mode 1): a killed one goes inactive
    after ds_probing_threshold failed OPTIONS, no call is sent to it, and it is
    active again after ds_inactive_threshold answers once restarted."""
    router = {
        "ds_ping_interval": 0.5,
        "ds_ping_timeout": 0.5,
        "ds_probing_mode": 1,
        "ds_probing_threshold": 2,
        "ds_inactive_threshold": 2,
    }
    core = start_core(workdir, routing_config(workdir, alg=4, router=router))
    try:
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(core, dests)
        victim = dests[2]
        wait_probed(victim)
        victim.stop()
        wait_state(core, victim, "IP")
        tag = place(core, workdir, 10)
        assert spread(dests[:2], tag, 10) == [5, 5]
        assert victim.invites() == set()

        back = start_uas(uases, workdir, "d2b", UAS_ANSWER, victim.port)
        wait_state(core, back, "AP")
        tag = place(core, workdir, 9)
        assert spread([*dests[:2], back], tag, 9) == [3, 3, 3]
    finally:
        assert core.stop() == 0, core.log()


def wait_probed(dest: Uas, timeout: float = 15.0) -> None:
    """Until an OPTIONS probe reached `dest` (bounded)."""
    deadline = time.monotonic() + timeout
    while f"OPTIONS {dest.uri}" not in dest.received() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"OPTIONS {dest.uri} SIP/2.0" in dest.received(), dest.received()[-2000:]


def metric(proc: SipmeshProcess, name: str, **labels: str) -> float:
    """The value of one sample of /metrics."""
    for line in proc.metrics().splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.split()[-1])
    return 0.0


# -- least-cost routing ------------------------------------------------------------------


def low_port() -> int:
    """A free UDP port below 32768: lcr_gw.port is a SMALLINT (Kamailio's schema)."""
    for port in random.sample(range(20000, 32768), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def row_id(shown: str, section: str, column: str, value: str) -> str:
    """The id of the row of `section` (gateways, rules) whose `column` is `value`."""
    block = shown.split(f"{section}:", 1)[1].split("\n\n", 1)[0].strip().splitlines()
    header = block[0].split()
    for line in block[1:]:
        row = dict(zip(header, line.split(), strict=False))
        if row.get(column) == value:
            return row["id"]
    raise AssertionError(f"no {section} row with {column}={value}: {shown}")


def test_lcr_longest_prefix_and_failover_across_gateways_on_503(
    workdir: Path, uases: list[Uas]
) -> None:
    core = start_core(workdir, routing_config(workdir, alg=4))
    try:
        refusing = start_uas(uases, workdir, "refusing", UAS_503, low_port())
        second = start_uas(uases, workdir, "second", UAS_ANSWER, low_port())
        berlin = start_uas(uases, workdir, "berlin", UAS_ANSWER, low_port())
        for name, uas in (("refusing", refusing), ("second", second), ("berlin", berlin)):
            admin(core, "lcr", "gw-add", "1", name, "127.0.0.1", str(uas.port))
        admin(core, "lcr", "rule-add", "1", "49")
        admin(core, "lcr", "rule-add", "1", "4930")
        shown = admin(core, "lcr", "show", "1")
        gw = {n: row_id(shown, "gateways", "gw_name", n) for n in ("refusing", "second", "berlin")}
        rule49 = row_id(shown, "rules", "prefix", "49")
        rule4930 = row_id(shown, "rules", "prefix", "4930")
        admin(core, "lcr", "target-add", "1", rule49, gw["refusing"], "1")
        admin(core, "lcr", "target-add", "1", rule49, gw["second"], "2")
        admin(core, "lcr", "target-add", "1", rule4930, gw["berlin"], "1")
        reloaded_everywhere(admin(core, "lcr", "reload"))

        # 4930…: the longest prefix wins; its gateway answers.
        tag = place(core, workdir, 1, user="493012345")
        assert spread([refusing, second, berlin], tag, 1) == [0, 0, 1]
        assert berlin.request_uris(tag) == [f"INVITE sip:493012345@127.0.0.1:{berlin.port} SIP/2.0"]
        # 4989…: rule 49; the priority 1 gateway refuses (503) and next_gw() in the
        # failure route sends the call to the priority 2 gateway.
        tag = place(core, workdir, 1, user="498912345")
        assert spread([refusing, second, berlin], tag, 2) == [1, 1, 0]
        want = "INVITE sip:498912345@127.0.0.1:{} SIP/2.0"
        assert refusing.request_uris(tag) == [want.format(refusing.port)]
        assert second.request_uris(tag) == [want.format(second.port)]
    finally:
        assert core.stop() == 0, core.log()


# -- two router instances sharing the states -------------------------------------------


async def _admin_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def shared_backends(
    postgres_admin_url: str, redis_url: str, nats_url: str, unique_prefix: str
) -> Iterator[dict[str, str]]:
    """A PostgreSQL database of this test, Redis and NATS under a namespace of its own."""
    database = f"ds_{unique_prefix}"
    asyncio.run(_admin_sql(postgres_admin_url, f'CREATE DATABASE "{database}"'))
    db_url = postgres_admin_url.rsplit("/", 1)[0] + "/" + database
    try:
        yield {
            "SIPMESH_DB": db_url,
            "SIPMESH_STATE": redis_url,
            "SIPMESH_BUS": nats_url,
            "SIPMESH_NAMESPACE": f"ds{unique_prefix}",
        }
    finally:
        asyncio.run(
            _admin_sql(postgres_admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        )


def relays(proc: SipmeshProcess) -> float:
    return metric(proc, "sipmesh_router_decisions_total", kind="request", action="relay")


def failure_relays(proc: SipmeshProcess) -> float:
    return metric(proc, "sipmesh_router_decisions_total", kind="failure", action="relay")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.nats
def test_two_routers_behind_one_edge_share_destination_states(
    workdir: Path, uases: list[Uas], shared_backends: dict[str, str]
) -> None:
    """One edge, two router processes (endpoints.router lists both; the edge takes
    them in turn per request), one prober between them (KV lease). An operator's
    `dispatcher set-state` and the prober's marks are followed by both routers."""
    config = routing_config(
        workdir,
        alg=4,
        router={
            "ds_ping_interval": 0.5,
            "ds_ping_timeout": 0.5,
            "ds_probing_threshold": 2,
            "ds_inactive_threshold": 2,
            # Long: the routers must learn of changes from the bus, not the re-read.
            "ds_state_refresh": 60,
        },
    )
    path = workdir / "sipmesh.yaml"
    path.write_text(yaml.safe_dump(config))
    common = ["--domain", DOMAIN, "--config", str(path)]
    edge = make_process(
        "edge", workdir, targets="edge,registrar,admin", env=shared_backends, extra_args=common
    )
    routers = [
        make_process(
            f"router{i}",
            workdir,
            targets="router",
            # The same listen as the edge: the routers' "myself" (loose_route).
            transports=("udp", "tcp"),
            sip_port=edge.sip_port,
            env={
                **shared_backends,
                "SIPMESH_ENDPOINTS__EDGE": f"127.0.0.1:{edge.grpc_port}",
                "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{edge.grpc_port}",
            },
            extra_args=common,
        )
        for i in (1, 2)
    ]
    edge.env["SIPMESH_ENDPOINTS__ROUTER"] = ",".join(f"127.0.0.1:{r.grpc_port}" for r in routers)
    subprocess.run(
        [*SIPMESH, "db", "init", "--db", shared_backends["SIPMESH_DB"]],
        check=True,
        capture_output=True,
        timeout=60,
        env=edge.env,
    )
    procs = [*routers, edge]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        admin(edge, "address", "add", "1", "127.0.0.1")
        reloaded_everywhere(admin(edge, "reload"), 2)
        dests = three(uases, workdir, UAS_ANSWER, UAS_ANSWER, UAS_ANSWER)
        provision(edge, dests, instances=2)
        wait_probed(dests[0])

        # An operator disables d2 (the prober leaves disabled destinations alone).
        admin(edge, "dispatcher", "set-state", "disabled", "1", dests[2].uri)
        assert states(edge)[dests[2].uri] == "DX"
        time.sleep(0.5)  # the notice crosses NATS
        before = [relays(r) for r in routers]
        tag = place(edge, workdir, 12)
        got = spread(dests, tag, 12)
        assert got[2] == 0, got
        assert sum(got) == 12, got
        assert min(got[:2]) >= 2, got  # two round-robin counters, one per router
        after = [relays(r) for r in routers]
        # Both routers decided INVITEs of this run, and neither chose d2.
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)

        # d1 dies: the prober (one of the routers) marks it inactive for both.
        dests[1].stop()
        wait_state(edge, dests[1], "IP")
        time.sleep(0.5)  # the prober's notice crosses NATS
        failovers = [failure_relays(r) for r in routers]
        tag = place(edge, workdir, 8)
        assert spread(dests, tag, 8) == [8, 0, 0]
        # No call was sent to the dead one first: no failure route had to move on.
        assert [failure_relays(r) for r in routers] == failovers

        # The operator puts d2 back; d1 restarted is found by the prober.
        admin(edge, "dispatcher", "set-state", "active", "1", dests[2].uri)
        back = start_uas(uases, workdir, "d1b", UAS_ANSWER, dests[1].port)
        wait_state(edge, back, "AP")
        assert states(edge)[dests[2].uri] == "AP"
        time.sleep(0.5)
        tag = place(edge, workdir, 12)
        got = spread([dests[0], back, dests[2]], tag, 12)
        assert sum(got) == 12, got
        assert all(n >= 2 for n in got), got  # two round-robin counters, one per router
    finally:
        for proc in reversed(procs):
            proc.stop()
