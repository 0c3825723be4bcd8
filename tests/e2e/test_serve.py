"""`sipmesh serve`: readiness, clean stop, split targets, one-line start errors."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.e2e.procs import SipmeshProcess, ctl, make_process


def test_all_in_one_is_ready_and_stops_cleanly_on_sigterm(workdir: Path) -> None:
    proc = make_process("all", workdir)
    proc.start()
    try:
        proc.wait_ready()
        status, body = proc.ready()
        assert status == 200
        services = body["services"]
        assert isinstance(services, dict)
        for target in ("edge", "router", "registrar", "kv", "db", "bus", "grpc-server"):
            assert services.get(target) == "running", body
        assert "sipmesh_" in proc.metrics()
    finally:
        code = proc.stop(signal.SIGTERM)
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log()


def test_sigint_stops_cleanly_too(workdir: Path) -> None:
    proc = make_process("int", workdir)
    proc.start()
    proc.wait_ready()
    assert proc.stop(signal.SIGINT) == 0, proc.log()


def test_ctl_finds_the_admin_token_serve_generated(workdir: Path) -> None:
    """With no write token configured, serve writes one to ./admin-token (mode 0600);
    ``sipmesh ctl`` run in the same directory sends it, elsewhere it is refused."""
    proc = make_process(
        "tokenfile", workdir, targets="registrar,admin", env={"SIPMESH_ADMIN_API__WRITE_TOKEN": ""}
    )
    proc.start()
    try:
        proc.wait_ready()
        token_file = workdir / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert token not in proc.log()
        api = ("--admin", f"127.0.0.1:{proc.grpc_port}")
        none = {"SIPMESH_ADMIN_TOKEN": ""}
        assert ctl(*api, "ping", env=none, cwd=workdir).startswith("pong from tokenfile")
        assert ctl(*api, "domain", "add", "file.test", env=none, cwd=workdir).strip()
        elsewhere = workdir / "elsewhere"
        elsewhere.mkdir()
        with pytest.raises(RuntimeError, match="no token found"):
            ctl(*api, "ping", env=none, cwd=elsewhere)
        shown = ctl(*api, "--token", token, "domain", "show", env=none, cwd=elsewhere)
        assert "file.test" in shown
    finally:
        assert proc.stop() == 0, proc.log()


def test_split_edge_router_with_a_separate_registrar(
    workdir: Path, redis_url: str, postgres_url: str, nats_url: str, unique_prefix: str
) -> None:
    shared = {"SIPMESH_STATE": redis_url, "SIPMESH_DB": postgres_url, "SIPMESH_BUS": nats_url}
    registrar = make_process("registrar", workdir, targets="registrar", env=shared)
    registrar.start()
    front: SipmeshProcess | None = None
    try:
        registrar.wait_ready()
        front = make_process(
            "front",
            workdir,
            targets="edge,router",
            env={**shared, "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{registrar.grpc_port}"},
        )
        front.start()
        front.wait_ready()
        _, body = front.ready()
        services = body["services"]
        assert isinstance(services, dict)
        assert set(services) >= {"edge", "router"}
        assert "registrar" not in services  # reached over gRPC, not run here
        assert "location" not in services
    finally:
        if front is not None:
            assert front.stop() == 0, front.log()
        assert registrar.stop() == 0, registrar.log()


def test_a_port_in_use_fails_start_with_one_line(workdir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        proc = make_process("busy", workdir, transports=("udp",), sip_port=port)
        proc.start()
        assert proc.proc is not None
        code = proc.proc.wait(30)
    assert code == 1
    log = proc.log()
    assert "cannot start" in log
    assert "Traceback" not in log
