"""Full calls between sipp user agents through a running sipmesh (issues 4, 5, 6)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SCENARIOS, SippResult, run_sipp

DOMAIN = "sipmesh.test"
CORE = "edge,router,registrar"

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]


def inject(workdir: Path, name: str, *rows: str) -> Path:
    path = workdir / name
    path.write_text("SEQUENTIAL\n" + "".join(f"{row}\n" for row in rows))
    return path


def expect_status(workdir: Path, status: int) -> str:
    """The call_expect_status scenario for one final status (sipp has no keyword there)."""
    template = (SCENARIOS / "call_final_status.xml.in").read_text()
    path = workdir / f"call_expect_{status}.xml"
    path.write_text(template.replace("@STATUS@", str(status)))
    return str(path)


def register_at(
    proc: SipmeshProcess, workdir: Path, user: str, password: str, port: int, transport: str
) -> None:
    """Register `user` with a contact on `port` (where a sipp UAS will then listen)."""
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario="register_auth.xml",
        workdir=workdir / f"reg-{user}",
        inf=inject(workdir, f"reg-{user}.csv", f"{user};{DOMAIN}"),
        local_port=port,
        transport=transport,
        extra=["-au", user, "-ap", password],
        timeout=15,
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + proc.log()


def start_uas(workdir: Path, port: int, scenario: str, transport: str) -> subprocess.Popen[bytes]:
    uas = run_sipp(
        "",
        scenario=scenario,
        workdir=workdir / f"uas-{port}",
        local_port=port,
        transport=transport,
        background=True,
        timeout=30,
    )
    assert isinstance(uas, subprocess.Popen)
    time.sleep(0.3)  # sipp binds its socket
    return uas


@pytest.fixture
def core(workdir: Path) -> SipmeshProcess:
    proc = make_process("core", workdir, targets=CORE, extra_args=["--domain", DOMAIN])
    for user in ("alice", "bob"):
        ctl("--db", proc.env["SIPMESH_DB"], "add", f"{user}@{DOMAIN}", f"{user}-pw")
    proc.start()
    proc.wait_ready()
    return proc


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_registered_alice_calls_registered_bob(
    core: SipmeshProcess, workdir: Path, transport: str
) -> None:
    bob_port = free_port()
    uas: subprocess.Popen[bytes] | None = None
    try:
        register_at(core, workdir, "bob", "bob-pw", bob_port, transport)
        uas = start_uas(workdir, bob_port, "uas_answer.xml", transport)
        call = run_sipp(
            f"127.0.0.1:{core.sip_port}",
            scenario="call_auth.xml",
            workdir=workdir / "caller",
            inf=inject(workdir, "call.csv", f"alice;{DOMAIN};bob"),
            transport=transport,
            extra=["-au", "alice", "-ap", "alice-pw"],
            timeout=20,
        )
        assert isinstance(call, SippResult)
        assert call.returncode == 0, call.output + core.log()
        assert call.successful == 1
    finally:
        if uas is not None:
            uas.kill()
            uas.wait(5)
        assert core.stop() == 0, core.log()


def test_call_to_unregistered_user_gets_404(core: SipmeshProcess, workdir: Path) -> None:
    try:
        call = run_sipp(
            f"127.0.0.1:{core.sip_port}",
            scenario=expect_status(workdir, 404),
            workdir=workdir / "caller",
            inf=inject(workdir, "call.csv", f"alice;{DOMAIN};bob"),
            extra=["-au", "alice", "-ap", "alice-pw"],
            timeout=15,
        )
        assert isinstance(call, SippResult)
        assert call.returncode == 0, call.output + core.log()
    finally:
        core.stop()


def test_foreign_to_foreign_is_not_relayed(core: SipmeshProcess, workdir: Path) -> None:
    try:
        call = run_sipp(
            f"127.0.0.1:{core.sip_port}",
            scenario=expect_status(workdir, 403),
            workdir=workdir / "caller",
            inf=inject(workdir, "call.csv", "mallory;elsewhere.example;victim"),
            extra=["-au", "mallory", "-ap", "x"],
            timeout=15,
        )
        assert isinstance(call, SippResult)
        assert call.returncode == 0, call.output + core.log()
    finally:
        core.stop()
