"""The cluster test (issue 12, item 4): the compose topology under sipp.

The services of docker-compose.yml run as local processes (tests/cluster/harness.py)
against the real PostgreSQL, Redis and NATS: one registrar, two routers, two edges.
sipp drives them:

- registrations and calls through both edges, and a user registered through edge 1
  called through edge 2 — over UDP (the contact address) and over TCP, where the
  user's connection ends at edge 1 and edge 2 must hand the request over (Edge.Send);
- one router SIGKILLed in the middle of a load run of REGISTERs and calls: failures
  are bounded by what was in flight at that instant (the edge answers a request whose
  router stream broke with 503; UDP retransmissions and new requests go to the other
  router), everything else succeeds;
- a rolling restart of the edges with graceful drain: calls in progress through the
  edge being stopped finish (their BYE still crosses it), a new call offered to it
  is refused with 503, new calls through the other edge succeed, and the edge exits 0.

Every run prints its numbers (attempted / succeeded / failed).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, Instance, free_port
from tests.cluster.sippload import (
    SippRun,
    inject,
    scenario_from,
    sipp_client,
)
from tests.cluster.sipua import UA
from tests.e2e.procs import ctl
from tests.e2e.sipp import SCENARIOS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.sipp,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.nats,
    pytest.mark.slow,
    # Each test starts five processes, drives sipp and stops them gracefully.
    pytest.mark.timeout(300),
]

DOMAIN = "localhost"  # docker-compose.yml's SIPMESH_DOMAINS default
CORE = ("registrar", "router", "edge-1", "edge-2")
USERS = ("alice", "bob", "carol", "loadreg", "caller", "callee", "tcpuser")


def password(user: str) -> str:
    return f"{user}-pw"


@pytest.fixture
def core(cluster: Cluster) -> Cluster:
    """Registrar, both routers and both edges of the compose file, with subscribers."""
    # Every UA of the test is sipp on 127.0.0.1: one source to the anti-flood check
    # (pike, 16 requests / 2 s by default), which would ban the load generator itself.
    for edge in (*cluster.instances["edge-1"], *cluster.instances["edge-2"]):
        edge.env["SIPMESH_EDGE__TRUSTED_SOURCES"] = "127.0.0.1"
    cluster.run_jobs()
    for user in USERS:
        ctl("--db", cluster.backends.db, "add", f"{user}@{DOMAIN}", password(user))
    cluster.start(only=CORE)
    print("\n" + cluster.report())
    for name in CORE:
        for instance in cluster.instances[name]:
            assert instance.status == "running", cluster.report() + instance.log()
    return cluster


def remote(edge: Instance, proto: str = "udp") -> str:
    return f"127.0.0.1:{edge.sip_port(proto)}"


def register(
    workdir: Path, edge: Instance, user: str, *, port: int, calls: int = 1, rate: float = 10
) -> SippRun:
    """sipp REGISTER(s) of `user` with the contact on `port` (a sipp UAS listens there)."""
    run = sipp_client(
        f"reg-{user}-{port}",
        workdir,
        remote(edge),
        SCENARIOS / "register_auth.xml",
        calls=calls,
        rate=rate,
        inf=inject(workdir, f"reg-{user}.csv", f"{user};{DOMAIN}"),
        user=user,
        password=password(user),
    )
    cmd = run.cmd
    cmd[cmd.index("-i") : cmd.index("-i")] = ["-p", str(port)]
    return run.start()


def call(
    workdir: Path,
    name: str,
    edge: Instance,
    caller: str,
    callee: str,
    *,
    calls: int = 1,
    rate: float = 10,
    scenario: Path = SCENARIOS / "call_auth.xml",
) -> SippRun:
    return sipp_client(
        name,
        workdir,
        remote(edge),
        scenario,
        calls=calls,
        rate=rate,
        inf=inject(workdir, f"{name}.csv", f"{caller};{DOMAIN};{callee}"),
        user=caller,
        password=password(caller),
    ).start()


def numbers(label: str, run: SippRun) -> str:
    line = (
        f"{label}: attempted {run.attempted}, succeeded {run.succeeded}, failed {run.failed}"
        f" (sipp exit {run.returncode})"
    )
    print(line)
    return line


def logs(cluster: Cluster) -> str:
    return "\n".join(f"--- {i.name}\n{i.log(2500)}" for i in cluster.all_instances() if i.proc)


def callee(edge: Instance, user: str, transport: str = "udp") -> UA:
    """A UA registered through `edge` that answers calls (tests/cluster/sipua.py)."""
    ua = UA(edge.sip_port(transport), user, password(user), DOMAIN, transport)
    status = ua.register()
    assert status == 200, f"REGISTER of {user} via {edge.name}: {status} {ua.received}"
    return ua.serve()


def test_calls_through_both_edges_and_across_edges(core: Cluster, tmp_path: Path) -> None:
    edge1, edge2 = core.instance("edge-1"), core.instance("edge-2")
    # sipp REGISTERs through both edges (UDP).
    regs = [
        register(tmp_path, edge1, "carol", port=free_port(), calls=5),
        register(tmp_path, edge2, "carol", port=free_port(), calls=5),
    ]
    for run in regs:
        run.finish(30)
        numbers(f"REGISTER {run.name}", run)
        assert run.succeeded == 5, run.output() + logs(core)
    # alice registers through edge 1, bob through edge 2 (UDP).
    alice, bob = callee(edge1, "alice"), callee(edge2, "bob")
    try:
        # Each edge carries calls to the user registered through the other one and
        # to its own.
        runs = [
            call(tmp_path, "e2-to-alice", edge2, "carol", "alice", calls=5),
            call(tmp_path, "e1-to-bob", edge1, "carol", "bob", calls=5),
            call(tmp_path, "e1-to-alice", edge1, "caller", "alice", calls=5),
            call(tmp_path, "e2-to-bob", edge2, "caller", "bob", calls=5),
        ]
        for run in runs:
            run.finish(60)
            numbers(f"calls {run.name}", run)
        for run in runs:
            assert run.succeeded == 5, run.output() + logs(core)
            assert run.failed == 0
        assert alice.answered["INVITE"] >= 10
        assert alice.answered["BYE"] == 10
        assert bob.answered["BYE"] == 10
    finally:
        alice.close()
        bob.close()


def _without_bye(workdir: Path) -> Path:
    """call_auth.xml up to the ACK of the 200: the initial INVITE transaction only."""
    text = (SCENARIOS / "call_auth.xml").read_text()
    head, _, rest = text.partition('<pause milliseconds="200"/>')
    _, _, tail = rest.partition("<ResponseTimeRepartition")
    path = workdir / "call_no_bye.xml"
    path.write_text(head + "<ResponseTimeRepartition" + tail)
    return path


def test_tcp_user_of_edge_1_called_through_edge_2(core: Cluster, tmp_path: Path) -> None:
    """The only way to the user is its TCP connection to edge 1 (RFC 5626 flow reuse):
    edge 2 hands the INVITE to edge 1 (Edge.Send), which sends it over that connection."""
    edge1, edge2 = core.instance("edge-1"), core.instance("edge-2")
    ua = callee(edge1, "tcpuser", "tcp")
    try:
        scenario = _without_bye(tmp_path)
        run = call(
            tmp_path, "e2-to-tcpuser", edge2, "caller", "tcpuser", calls=3, scenario=scenario
        )
        run.finish(30)
        numbers("TCP: INVITEs via edge 2 to a user connected to edge 1", run)
        print(f"TCP UA answered: {dict(ua.answered)}")
        assert run.succeeded == 3, run.output() + f"\nUA saw {ua.received}\n" + logs(core)
        assert ua.answered["INVITE"] >= 3
    finally:
        ua.close()


def test_tcp_in_dialog_bye_reaches_the_flow_at_edge_1(core: Cluster, tmp_path: Path) -> None:
    """The BYE enters at edge 2 like the INVITE; edge 2's Record-Route carries edge 1's
    flow token (RFC 5626 §5.3, services/edge/flowtoken.py), so the router's
    loose_route names the flow and edge 2 hands the BYE to edge 1 instead of dialling
    the UA's Contact."""
    edge1, edge2 = core.instance("edge-1"), core.instance("edge-2")
    ua = callee(edge1, "tcpuser", "tcp")
    try:
        run = call(tmp_path, "e2-to-tcpuser-bye", edge2, "caller", "tcpuser")
        run.finish(30)
        numbers("TCP: full call (with BYE) via edge 2 to a user connected to edge 1", run)
        assert run.succeeded == 1
        assert ua.answered["BYE"] == 1
    finally:
        ua.close()


def test_router_killed_during_load(core: Cluster, tmp_path: Path) -> None:
    """200 REGISTERs (20/s) through edge 1 and 50 calls (5/s) through edge 2; router 1
    is SIGKILLed about 4 s into the run."""
    edge1, edge2 = core.instance("edge-1"), core.instance("edge-2")
    ua = callee(edge1, "callee")
    reg_port = free_port()
    try:
        regs = register(tmp_path, edge1, "loadreg", port=reg_port, calls=200, rate=20)
        calls = call(tmp_path, "load-calls", edge2, "caller", "callee", calls=50, rate=5)
        time.sleep(4.0)
        killed_at = {
            "regs": time.monotonic() - regs.started,
            "calls": time.monotonic() - calls.started,
        }
        assert core.kill("router", 1) != 0
        regs.finish(90)
        calls.finish(90)
        router2 = core.instance("router", 2)
        assert router2.alive()
        assert router2.ready()[0] == 200
        # In flight when the router died: what sipp reported as current around then.
        bound = regs.in_flight_near(killed_at["regs"]) + calls.in_flight_near(killed_at["calls"])
        lost = regs.failed + calls.failed
        print(
            "\nrouter-1 killed {:.1f}s into the run; in flight then (sipp CurrentCall): {}".format(
                killed_at["regs"], bound
            )
        )
        numbers("REGISTER load (edge 1)", regs)
        numbers("call load (edge 2)", calls)
        print(f"lost when the router was killed: {lost} (bound {bound})")
        assert regs.attempted == 200, regs.output()
        assert calls.attempted == 50, calls.output()
        assert regs.succeeded + regs.failed == 200
        assert calls.succeeded + calls.failed == 50
        assert lost <= bound, regs.output() + calls.output() + logs(core)
    finally:
        ua.close()


def _sigterm(instance: Instance) -> None:
    assert instance.proc is not None
    instance.proc.send_signal(signal.SIGTERM)


def test_rolling_restart_of_the_edges_drains(core: Cluster, tmp_path: Path) -> None:
    """Per edge: long calls through it, SIGTERM, new calls elsewhere, the long calls end."""
    long_call = scenario_from(
        tmp_path, "call_auth.xml", "long_call.xml", **{'milliseconds="200"': 'milliseconds="4000"'}
    )
    refused = scenario_from(
        tmp_path, "call_expect_status.xml.in", "expect_503.xml", **{"@STATUS@": "503"}
    )
    uas: list[UA] = []
    try:
        for index, other in ((1, 2), (2, 1)):
            edge = core.instance(f"edge-{index}")
            spare = core.instance(f"edge-{other}")
            # The callee is registered through the edge that stays (as a UA moved by
            # the load balancer re-registers): the draining edge's gRPC API is gone,
            # so nothing can be handed to it.
            uas.append(callee(spare, "callee"))
            long = call(tmp_path, f"long-{index}", edge, "caller", "callee", calls=4,
                        rate=10, scenario=long_call)  # fmt: skip
            time.sleep(1.5)  # every long call is answered and in its 4 s pause
            _sigterm(edge)
            time.sleep(0.3)
            probe = call(tmp_path, f"refused-{index}", edge, "carol", "callee", scenario=refused)
            fresh = call(tmp_path, f"fresh-{index}", spare, "carol", "callee", calls=5)
            probe.finish(30)
            fresh.finish(60)
            long.finish(60)
            assert edge.proc is not None
            code = edge.proc.wait(30)
            edge.status = "exited"
            numbers(f"edge-{index} draining: calls in progress", long)
            numbers(f"edge-{index} draining: new call offered to it (503 expected)", probe)
            numbers(f"edge-{index} draining: new calls via edge-{other}", fresh)
            print(f"edge-{index} exit status after drain: {code}")
            assert long.succeeded == 4, long.output() + logs(core)
            assert long.failed == 0
            assert probe.succeeded == 1, probe.output()
            assert fresh.succeeded == 5, fresh.output() + logs(core)
            assert code == 0, edge.log()
            core._spawn(edge)
            core._await_ready(edge)
            assert edge.status == "running", edge.log()
    finally:
        for ua in uas:
            ua.close()
