"""sipp REGISTER with digest authentication against a running sipmesh (issue 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.procs import SipmeshProcess, ctl, make_process
from tests.e2e.sipp import SippResult, run_sipp

DOMAIN = "sipmesh.test"
CORE = "edge,router,registrar"

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]


def provision(db_url: str, *users: tuple[str, str]) -> None:
    for user, password in users:
        ctl("--db", db_url, "add", f"{user}@{DOMAIN}", password)


def users_file(workdir: Path, *users: str) -> Path:
    path = workdir / "users.csv"
    path.write_text("SEQUENTIAL\n" + "".join(f"{u};{DOMAIN}\n" for u in users))
    return path


def register(
    proc: SipmeshProcess, workdir: Path, user: str, password: str, scenario: str, transport: str
) -> SippResult:
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / f"sipp-{user}-{transport}",
        inf=users_file(workdir, user),
        transport=transport,
        extra=["-au", user, "-ap", password],
        timeout=20,
    )
    assert isinstance(result, SippResult)
    return result


def location(db_url: str, state: str, aor: str) -> list[dict[str, object]]:
    out = ctl("--db", db_url, "--state", state, "--json", "ul", "show", aor, check=False)
    return json.loads(out) if out.strip() else []


@pytest.fixture
def embedded_core(workdir: Path) -> SipmeshProcess:
    proc = make_process("core", workdir, targets=CORE, extra_args=["--domain", DOMAIN])
    provision(proc.env["SIPMESH_DB"], ("alice", "alice-secret"), ("bob", "bob-secret"))
    proc.start()
    proc.wait_ready()
    return proc


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_register_with_digest_over_udp_and_tcp(
    embedded_core: SipmeshProcess, workdir: Path, transport: str
) -> None:
    try:
        ok = register(
            embedded_core, workdir, "alice", "alice-secret", "register_auth.xml", transport
        )
        assert ok.returncode == 0, ok.output + embedded_core.log()
        assert ok.successful == 1
        wrong = register(
            embedded_core, workdir, "bob", "not-bobs", "register_wrong_password.xml", transport
        )
        assert wrong.returncode == 0, wrong.output + embedded_core.log()
        metrics = embedded_core.metrics()
        assert "sipmesh_registrar_accepted_regs" in metrics or "accepted_regs" in metrics
    finally:
        assert embedded_core.stop() == 0, embedded_core.log()


def test_register_split_edge_and_registrar_processes(
    workdir: Path, redis_url: str, postgres_url: str, nats_url: str
) -> None:
    shared = {"SIPMESH_STATE": redis_url, "SIPMESH_DB": postgres_url, "SIPMESH_BUS": nats_url}
    provision(postgres_url, ("carol", "carol-secret"))
    registrar = make_process(
        "registrar", workdir, targets="registrar", env=shared, extra_args=["--domain", DOMAIN]
    )
    registrar.start()
    edge = make_process(
        "edge",
        workdir,
        targets="edge,router",
        env={**shared, "SIPMESH_ENDPOINTS__REGISTRAR": f"127.0.0.1:{registrar.grpc_port}"},
        extra_args=["--domain", DOMAIN],
    )
    try:
        registrar.wait_ready()
        edge.start()
        edge.wait_ready()
        result = register(edge, workdir, "carol", "carol-secret", "register_auth.xml", "u1")
        assert result.returncode == 0, result.output + edge.log() + registrar.log()
        bindings = location(postgres_url, redis_url, f"carol@{DOMAIN}")
        assert bindings, "the binding is in the shared location store"
    finally:
        edge.stop()
        registrar.stop()


def test_live_bindings_of_the_embedded_registrar_through_the_admin_api(workdir: Path) -> None:
    """`sipmesh ctl --admin … ul show|rm`: the live store, as kamctl's ul over RPC."""
    proc = make_process(
        "live", workdir, targets="edge,router,registrar,admin", extra_args=["--domain", DOMAIN]
    )
    provision(proc.env["SIPMESH_DB"], ("dave", "dave-secret"))
    proc.start()
    try:
        proc.wait_ready()
        result = register(proc, workdir, "dave", "dave-secret", "register_auth.xml", "u1")
        assert result.returncode == 0, result.output + proc.log()
        admin = ["--db", proc.env["SIPMESH_DB"], "--admin", f"127.0.0.1:{proc.grpc_port}"]
        shown = json.loads(ctl(*admin, "--json", "ul", "show", f"dave@{DOMAIN}"))
        assert [b["aor"] for b in shown] == [f"dave@{DOMAIN}"]
        assert shown[0]["contact"].startswith("sip:dave@127.0.0.1:")
        assert 0 < shown[0]["expires"] <= 300
        ctl(*admin, "ul", "rm", f"dave@{DOMAIN}")
        assert ctl(*admin, "--json", "ul", "show", check=False).strip() in ("[]", "")
    finally:
        assert proc.stop() == 0, proc.log()
