"""Observability of split services as real processes (issue 14, "Done when").

edge, router and registrar run as three `sipmesh serve` processes sharing Redis,
PostgreSQL and NATS. The test starts an OTLP/gRPC receiver (opentelemetry-proto's
TraceService) and a HEP v3 UDP receiver on 127.0.0.1, drives sipp through the edge,
and checks:

- one REGISTER transaction and one INVITE transaction each form one trace across the
  three processes, with parent/child links edge → router → registrar;
- the Prometheus counters of /metrics match the SIP traffic sipp sent;
- every SIP message of the call is mirrored to the HEP receiver, both directions.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from sipmesh.observe.hep import HepPacket, decode_hep3
from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.redis, pytest.mark.postgres,
              pytest.mark.nats, pytest.mark.slow]  # fmt: skip

DOMAIN = "sipmesh.test"
CALLER, CALLEE = "obsalice", "obsbob"


@dataclass
class SpanRecord:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, object]


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """The collector side of OTLP/gRPC: keeps every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[SpanRecord] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attrs: dict[str, object] = {}
                        for a in span.attributes:
                            kind = a.value.WhichOneof("value")
                            attrs[a.key] = getattr(a.value, kind) if kind else None
                        self.spans.append(
                            SpanRecord(
                                service,
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                attrs,
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[SpanRecord]:
        with self._lock:
            return list(self.spans)


@dataclass
class HepReceiver:
    sock: socket.socket
    packets: list[HepPacket] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.packets.append(decode_hep3(data))


@dataclass
class Cluster:
    edge: SipmeshProcess
    router: SipmeshProcess
    registrar: SipmeshProcess
    otlp: OtlpReceiver
    hep: HepReceiver
    workdir: Path

    def logs(self) -> str:
        return self.edge.log() + self.router.log() + self.registrar.log()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str, nats_url: str
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("observe")
    receiver = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    hep_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hep_sock.bind(("127.0.0.1", 0))
    hep = HepReceiver(hep_sock)
    hep_thread = threading.Thread(target=hep.run, daemon=True)
    hep_thread.start()
    telemetry = {
        "SIPMESH_STATE": redis_url,
        "SIPMESH_DB": postgres_url,
        "SIPMESH_BUS": nats_url,
        "SIPMESH_TELEMETRY__EXPORTER": "otlp-grpc",
        "SIPMESH_TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    for user in (CALLER, CALLEE):
        ctl("--db", postgres_url, "rm", f"{user}@{DOMAIN}", check=False)
        ctl("--db", postgres_url, "add", f"{user}@{DOMAIN}", f"{user}-pw")
    domain = ["--domain", DOMAIN]
    registrar = make_process("obs-registrar", workdir, targets="registrar", env=telemetry,
                             extra_args=domain)  # fmt: skip
    router = make_process(
        "obs-router",
        workdir,
        targets="router",
        env={**telemetry, "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{registrar.grpc_port}"},
        extra_args=domain,
    )
    edge = make_process(
        "obs-edge",
        workdir,
        targets="edge",
        env={
            **telemetry,
            "SIPMESH_ENDPOINTS__ROUTER": f"127.0.0.1:{router.grpc_port}",
            "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{registrar.grpc_port}",
            "SIPMESH_TELEMETRY__HEP_DESTINATION": f"sip:127.0.0.1:{hep_sock.getsockname()[1]}",
            "SIPMESH_TELEMETRY__HEP_CAPTURE_ID": "4242",
        },
        extra_args=domain,
    )
    procs = (registrar, router, edge)
    try:
        for proc in procs:
            proc.start()
            proc.wait_ready()
        yield Cluster(edge, router, registrar, receiver, hep, workdir)
    finally:
        for proc in reversed(procs):
            proc.stop()
        hep.stop.set()
        hep_thread.join(5)
        hep_sock.close()
        server.stop(None)


def inject(workdir: Path, name: str, row: str) -> Path:
    path = workdir / name
    path.write_text(f"SEQUENTIAL\n{row}\n")
    return path


def register(cluster: Cluster, user: str, port: int | None = None) -> None:
    result = run_sipp(
        f"127.0.0.1:{cluster.edge.sip_port}",
        scenario="register_auth.xml",
        workdir=cluster.workdir / f"reg-{user}",
        inf=inject(cluster.workdir, f"reg-{user}.csv", f"{user};{DOMAIN}"),
        local_port=port,
        extra=["-au", user, "-ap", f"{user}-pw"],
        timeout=15,
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + cluster.logs()


def place_call(cluster: Cluster) -> int:
    """obsbob registered on a sipp UAS, obsalice calls him; returns the UAS port."""
    bob_port = free_port(socket.SOCK_DGRAM)
    register(cluster, CALLEE, bob_port)
    uas = run_sipp("", scenario="uas_answer.xml", workdir=cluster.workdir / "uas",
                   local_port=bob_port, background=True, timeout=30)  # fmt: skip
    assert isinstance(uas, subprocess.Popen)
    try:
        time.sleep(0.3)  # sipp binds its socket
        call = run_sipp(
            f"127.0.0.1:{cluster.edge.sip_port}",
            scenario="call_auth.xml",
            workdir=cluster.workdir / "caller",
            inf=inject(cluster.workdir, "call.csv", f"{CALLER};{DOMAIN};{CALLEE}"),
            extra=["-au", CALLER, "-ap", f"{CALLER}-pw"],
            timeout=20,
        )
        assert isinstance(call, SippResult)
        assert call.returncode == 0, call.output + cluster.logs()
        assert call.successful == 1
    finally:
        uas.kill()
        uas.wait(5)
    return bob_port


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def trace_of(spans: list[SpanRecord], root: SpanRecord) -> list[SpanRecord]:
    return [s for s in spans if s.trace_id == root.trace_id]


def assert_linked_trace(
    spans: list[SpanRecord], method: str, status: int, registrar_calls: set[str]
) -> None:
    """The edge's transaction span → the router's decision span → registrar spans."""
    roots = [
        s
        for s in spans
        if s.service == "sipmesh-edge"
        and s.name == f"SIP {method}"
        and s.attributes.get("sip.status_code") == status
    ]
    assert len(roots) == 1, [(s.name, s.attributes) for s in spans if s.service == "sipmesh-edge"]
    root = roots[0]
    assert root.parent == ""  # the transaction starts the trace
    assert root.attributes["network.transport"] == "udp"
    assert root.attributes["network.peer.address"] == "127.0.0.1"
    assert root.attributes["server.port"] is not None
    assert root.attributes["sip.call_id"]
    trace = trace_of(spans, root)
    assert {s.service for s in trace} == {"sipmesh-edge", "sipmesh-router", "sipmesh-registrar"}
    decisions = [s for s in trace if s.service == "sipmesh-router" and s.name == "route request"]
    assert len(decisions) == 1
    decision = decisions[0]
    assert decision.parent == root.span_id
    assert decision.attributes["sip.call_id"] == root.attributes["sip.call_id"]
    registrar = [
        s for s in trace if s.service == "sipmesh-registrar" and s.name.startswith("registrar.")
    ]
    assert {s.name for s in registrar} == registrar_calls
    for span in registrar:
        assert span.parent == decision.span_id
    # Store operations (and bus publishes) of the registrar hang below its call spans.
    ids = {s.span_id for s in registrar}
    below = [s for s in trace if s.service == "sipmesh-registrar" and s.parent in ids]
    assert any(s.attributes.get("db.system") == "redis" for s in below), below
    assert all(s.attributes.get("db.system") or s.attributes.get("messaging.system") for s in below)


def test_one_register_and_one_call_are_each_one_trace_across_three_processes(
    cluster: Cluster,
) -> None:
    register(cluster, CALLER)
    wait_for(
        "REGISTER spans of the three processes",
        lambda: (
            any(s.name == "registrar.register" for s in cluster.otlp.snapshot())
            and any(
                s.name == "SIP REGISTER" and s.attributes.get("sip.status_code") == 200
                for s in cluster.otlp.snapshot()
            )
        ),
    )
    spans = cluster.otlp.snapshot()
    assert_linked_trace(
        [s for s in spans if s.attributes.get("sip.method", "REGISTER") == "REGISTER"],
        "REGISTER",
        200,
        {"registrar.register"},
    )

    place_call(cluster)

    def invite_done() -> bool:
        spans = cluster.otlp.snapshot()
        return any(s.name == "registrar.lookup" for s in spans) and any(
            s.name == "SIP INVITE" and s.attributes.get("sip.status_code") == 200 for s in spans
        )

    wait_for("INVITE spans", invite_done)
    time.sleep(0.5)  # the last batch of the other processes
    spans = cluster.otlp.snapshot()
    assert_linked_trace(spans, "INVITE", 200, {"registrar.authenticate", "registrar.lookup"})


def test_metrics_count_the_traffic_sent(cluster: Cluster) -> None:
    edge_before = cluster.edge.metrics()
    reg_before = cluster.registrar.metrics()
    register(cluster, CALLER)  # REGISTER → 401, REGISTER with credentials → 200
    edge_after = cluster.edge.metrics()
    reg_after = cluster.registrar.metrics()

    def delta(before: str, after: str, name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta(edge_before, edge_after, "sipmesh_rcv_requests_total", method="REGISTER") == 2
    assert delta(edge_before, edge_after, "sipmesh_transactions_total", class_="4xx") == 1
    assert delta(edge_before, edge_after, "sipmesh_transactions_total", class_="2xx") == 1
    assert delta(reg_before, reg_after, "sipmesh_accepted_regs_total") == 1
    assert delta(reg_before, reg_after, "sipmesh_auth_challenges_total") == 1
    assert metric(reg_after, "sipmesh_max_expires") > 0
    info = metric(edge_after, "sipmesh_instance_info", instance_id="obs-edge", target="edge")
    assert info == 1
    # Shared-store latency is measured where the registrar touches Redis.
    assert metric(reg_after, "sipmesh_store_operation_seconds_count", store="location") > 0


def test_hep_receiver_sees_every_message_of_a_call(cluster: Cluster) -> None:
    start = len(cluster.hep.packets)
    bob_port = place_call(cluster)
    invite_ids = {
        p.correlation_id
        for p in cluster.hep.packets[start:]
        if p.payload.startswith(b"INVITE ") and p.dst[1] == cluster.edge.sip_port
    }
    assert len(invite_ids) == 1
    call_id = invite_ids.pop()
    edge = ("127.0.0.1", cluster.edge.sip_port)

    def flow() -> list[tuple[str, str]]:
        out = []
        for p in cluster.hep.packets[start:]:
            if p.correlation_id != call_id:
                continue
            first = p.payload.split(b"\r\n", 1)[0].decode()
            word = first.split(" ")[1] if first.startswith("SIP/") else first.split(" ")[0]
            peer = "bob" if bob_port in (p.src[1], p.dst[1]) else "alice"
            out.append((("in " if p.dst == edge else "out ") + peer, word))
        return out

    expected = {
        ("in alice", "INVITE"), ("out alice", "407"), ("in alice", "ACK"),
        ("out alice", "100"), ("out bob", "INVITE"), ("in bob", "180"), ("in bob", "200"),
        ("out alice", "180"), ("out alice", "200"), ("in alice", "ACK"), ("out bob", "ACK"),
        ("in alice", "BYE"), ("out bob", "BYE"), ("in bob", "200"), ("out alice", "200"),
    }  # fmt: skip
    wait_for("every message of the call", lambda: expected <= set(flow()), timeout=10)
    captured = flow()
    assert sum(1 for entry in captured if entry == ("in alice", "INVITE")) >= 2  # with auth
    assert all(p.capture_id == 4242 for p in cluster.hep.packets[start:])
    assert all(p.proto == 17 and p.proto_type == 1 for p in cluster.hep.packets[start:])
