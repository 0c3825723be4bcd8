"""The default routing script's features through a running `sipmesh serve` (issue 6).

Real sipp user agents on 127.0.0.1 stand in for callees, the PSTN gateway and the
voicemail server. Runtime values (pstn.*, voicemail.*) are set with `sipmesh ctl cfg
set` through the admin API of the running process, and the routing tables with `sipmesh
ctl speeddial/alias` followed by `sipmesh ctl reload`, as an operator would.

Each callee UAS writes the messages it received (sipp -trace_msg), so a test proves
*which* request reached it (Request-URI rewritten for the gateway or voicemail, To of
a speed-dial or alias call), not only that some call was answered.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SCENARIOS, SippResult, run_sipp
from tests.e2e.test_call_sipp import DOMAIN, inject, register_at

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]

# The admin target serves `sipmesh ctl` (cfg, tables, reload) in the same process.
TARGETS = "edge,router,registrar,admin"


def final_status(workdir: Path, status: int) -> str:
    """The call_final_status scenario for one final status (sipp has no keyword there)."""
    template = (SCENARIOS / "call_final_status.xml.in").read_text()
    path = workdir / f"call_final_{status}.xml"
    path.write_text(template.replace("@STATUS@", str(status)))
    return str(path)


def start_sipmesh(workdir: Path, config: dict[str, object]) -> SipmeshProcess:
    """`sipmesh serve` with alice, bob and carol provisioned and `config` as YAML."""
    path = workdir / "sipmesh.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = make_process(
        "core", workdir, targets=TARGETS, extra_args=["--domain", DOMAIN, "--config", str(path)]
    )
    for user in ("alice", "bob", "carol"):
        ctl("--db", proc.env["SIPMESH_DB"], "add", f"{user}@{DOMAIN}", f"{user}-pw")
    proc.start()
    try:
        proc.wait_ready()
    except BaseException:
        proc.kill()
        raise
    return proc


def admin(proc: SipmeshProcess, *argv: str, check: bool = True) -> str:
    """`sipmesh ctl` through the running process's admin API."""
    return ctl("--admin", f"127.0.0.1:{proc.grpc_port}", "--domain", DOMAIN, *argv, check=check)


class Peer:
    """A background sipp UAS on its own port that logs every message it receives."""

    def __init__(self, workdir: Path, scenario: str, name: str, port: int = 0) -> None:
        self.port = port or free_port()
        self.messages = workdir / f"{name}-messages.log"
        uas = run_sipp(
            "",
            scenario=scenario,
            workdir=workdir / f"uas-{name}",
            local_port=self.port,
            background=True,
            timeout=60,
            extra=["-trace_msg", "-message_file", str(self.messages)],
        )
        assert isinstance(uas, subprocess.Popen)
        self.proc = uas
        time.sleep(0.3)  # sipp binds its socket

    def received(self) -> str:
        try:
            return self.messages.read_text(errors="replace")
        except OSError:
            return ""

    def invites(self) -> list[str]:
        """The request lines of the INVITEs received."""
        return [
            line.strip()
            for line in self.received().splitlines()
            if line.strip().startswith("INVITE ")
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def peers(workdir: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.stop()


def peer(peers: list[Peer], workdir: Path, scenario: str, name: str, port: int = 0) -> Peer:
    """A UAS on `port` (e.g. the contact a user registered), else on a free port."""
    started = Peer(workdir, scenario, name, port)
    peers.append(started)
    return started


def call(
    proc: SipmeshProcess, workdir: Path, callee: str, scenario: str, *, caller: str = "alice"
) -> SippResult:
    """One call from `caller` (digest credentials on the INVITE) to `callee`."""
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / f"call-{caller}-{callee}-{time.monotonic_ns()}",
        inf=inject(workdir, f"call-{callee}.csv", f"{caller};{DOMAIN};{callee}"),
        # Not sipp's default 5060: other tests' user agents may be using it.
        local_port=free_port(),
        extra=["-au", caller, "-ap", f"{caller}-pw"],
        timeout=20,
    )
    assert isinstance(result, SippResult)
    return result


def answered(proc: SipmeshProcess, workdir: Path, callee: str) -> None:
    result = call(proc, workdir, callee, "call_auth.xml")
    assert result.returncode == 0, result.output + proc.log()
    assert result.successful == 1


def test_pstn_number_reaches_the_gateway_set_at_run_time(workdir: Path, peers: list[Peer]) -> None:
    core = start_sipmesh(workdir, {"router": {"features": {"pstn": True}}})
    try:
        gateway = peer(peers, workdir, "uas_answer.xml", "gateway")
        # Without pstn.gw_ip the PSTN route is skipped (kamailio.cfg logs and goes on):
        # the number is looked up as a local user and not found.
        result = call(core, workdir, "004912345678", final_status(workdir, 404))
        assert result.returncode == 0, result.output + core.log()
        assert gateway.invites() == []

        admin(core, "cfg", "set", "pstn", "gw_ip", "127.0.0.1")
        admin(core, "cfg", "set", "pstn", "gw_port", str(gateway.port))
        assert "127.0.0.1" in admin(core, "cfg", "get", "pstn")
        time.sleep(0.3)  # the router re-reads cfg on the bus notice
        answered(core, workdir, "004912345678")
        # 00 -> + (route PSTN), sent to pstn.gw_ip:gw_port.
        assert gateway.invites() == [f"INVITE sip:+4912345678@127.0.0.1:{gateway.port} SIP/2.0"]
    finally:
        assert core.stop() == 0, core.log()


@pytest.mark.parametrize("callee_scenario", ["uas_busy.xml", "uas_no_answer.xml"])
def test_busy_or_unanswered_callee_goes_to_voicemail(
    workdir: Path, peers: list[Peer], callee_scenario: str
) -> None:
    core = start_sipmesh(
        workdir,
        {
            "router": {"features": {"voicemail": True}},
            # Timer C short, so the unanswered branch is cancelled quickly (408).
            "edge": {"fr_inv_timer": 2.0},
        },
    )
    try:
        voicemail = peer(peers, workdir, "uas_answer.xml", "voicemail")
        admin(core, "cfg", "set", "voicemail", "srv_ip", "127.0.0.1")
        admin(core, "cfg", "set", "voicemail", "srv_port", str(voicemail.port))
        bob_port = free_port()
        register_at(core, workdir, "bob", "bob-pw", bob_port, "u1")
        bob = peer(peers, workdir, callee_scenario, "bob", bob_port)
        answered(core, workdir, "bob")
        assert bob.invites() == [f"INVITE sip:bob@127.0.0.1:{bob_port};transport=UDP SIP/2.0"]
        if callee_scenario == "uas_no_answer.xml":
            assert "CANCEL sip:bob@" in bob.received()
        # route TOVOICEMAIL: the original extension at voicemail.srv_ip:srv_port.
        assert voicemail.invites() == [f"INVITE sip:bob@127.0.0.1:{voicemail.port} SIP/2.0"]
    finally:
        assert core.stop() == 0, core.log()


def test_speed_dial_and_alias_reach_their_targets_after_reload(
    workdir: Path, peers: list[Peer]
) -> None:
    core = start_sipmesh(workdir, {"router": {"features": {"speeddial": True, "aliasdb": True}}})
    try:
        bob_port, carol_port = free_port(), free_port()
        register_at(core, workdir, "bob", "bob-pw", bob_port, "u1")
        register_at(core, workdir, "carol", "carol-pw", carol_port, "u1")
        bob = peer(peers, workdir, "uas_answer.xml", "bob", bob_port)
        carol = peer(peers, workdir, "uas_answer.xml", "carol", carol_port)

        admin(core, "speeddial", "add", f"alice@{DOMAIN}", "21", f"sip:bob@{DOMAIN}")
        admin(core, "alias", "add", f"support@{DOMAIN}", f"carol@{DOMAIN}")
        assert "21" in admin(core, "speeddial", "show")
        assert "support" in admin(core, "alias", "show")
        # The router serves its in-memory snapshot of the tables until a reload.
        assert call(core, workdir, "21", final_status(workdir, 404)).returncode == 0
        reloaded = admin(core, "reload")
        assert "core: ok" in reloaded, reloaded

        answered(core, workdir, "21")
        answered(core, workdir, "support")
        assert bob.invites() == [f"INVITE sip:bob@127.0.0.1:{bob_port};transport=UDP SIP/2.0"]
        assert f"To: <sip:21@{DOMAIN}>" in bob.received()
        assert carol.invites() == [f"INVITE sip:carol@127.0.0.1:{carol_port};transport=UDP SIP/2.0"]
        assert f"To: <sip:support@{DOMAIN}>" in carol.received()
    finally:
        assert core.stop() == 0, core.log()


@pytest.mark.parametrize("block3xx", [True, False])
def test_redirect_from_callee_becomes_404_with_block3xx(
    workdir: Path, peers: list[Peer], block3xx: bool
) -> None:
    core = start_sipmesh(workdir, {"router": {"features": {"block3xx": block3xx}}})
    try:
        bob_port = free_port()
        register_at(core, workdir, "bob", "bob-pw", bob_port, "u1")
        bob = peer(peers, workdir, "uas_redirect_302.xml", "bob", bob_port)
        status = 404 if block3xx else 302
        result = call(core, workdir, "bob", final_status(workdir, status))
        assert result.returncode == 0, result.output + core.log()
        assert len(bob.invites()) == 1
    finally:
        assert core.stop() == 0, core.log()
