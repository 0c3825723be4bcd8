"""Kamailio's dialog statistics and tmx's UAS/UAC counts on /metrics after real calls.

One ``sipmesh serve`` process (edge, router, registrar), sipp user agents on
127.0.0.1: answered calls with their BYEs, a busy callee (486) and a call cancelled
while ringing; /metrics must show processed_dialogs equal to the calls answered,
active_dialogs back to 0 after the BYEs, failed_dialogs counting the 486 and the
CANCEL, and early_dialogs at 1 while the callee rings.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_call_sipp import expect_status, inject, register_at, start_uas

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]

DOMAIN = "sipmesh.test"
ANSWERED = 3


def values(proc: SipmeshProcess) -> dict[str, float]:
    """Unlabelled sipmesh samples of /metrics, by sample name."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(proc.metrics()):
        for sample in family.samples:
            if sample.name.startswith("sipmesh_") and not sample.labels:
                out[sample.name] = sample.value
    return out


def call(proc: SipmeshProcess, workdir: Path, name: str, callee: str, scenario: str,
         calls: int = 1, extra: list[str] | None = None) -> SippResult:  # fmt: skip
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / name,
        inf=inject(workdir, f"{name}.csv", f"alice;{DOMAIN};{callee}"),
        calls=calls,
        extra=["-au", "alice", "-ap", "alice-pw", *(extra or [])],
        timeout=30,
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + proc.log()
    return result


def test_dialog_and_transaction_statistics_follow_the_calls(tmp_path: Path) -> None:
    proc = make_process(
        "dlgstats",
        tmp_path,
        targets="edge,router,registrar,admin",
        extra_args=["--domain", DOMAIN],
        env={"SIPMESH_EDGE__ANTIFLOOD": "false"},  # every UA is 127.0.0.1 here
    )
    for user in ("alice", "bob", "carol", "dave"):
        ctl("--db", proc.env["SIPMESH_DB"], "add", f"{user}@{DOMAIN}", f"{user}-pw")
    proc.start()
    uases: list[subprocess.Popen[bytes]] = []
    ringing: subprocess.Popen[bytes] | None = None
    try:
        proc.wait_ready()
        ports = {user: free_port() for user in ("bob", "carol", "dave")}
        scenarios = {"bob": "uas_answer.xml", "carol": "uas_busy.xml", "dave": "uas_no_answer.xml"}
        for user, port in ports.items():
            register_at(proc, tmp_path, user, f"{user}-pw", port, "u1")
            uases.append(start_uas(tmp_path, port, scenarios[user], "u1"))
        before = values(proc)
        assert before["sipmesh_active_dialogs"] == 0
        assert before["sipmesh_processed_dialogs_total"] == 0

        answered = call(proc, tmp_path, "answered", "bob", "call_auth.xml", calls=ANSWERED)
        assert answered.successful == ANSWERED
        call(proc, tmp_path, "busy", "carol", expect_status(tmp_path, 486))

        # A caller that lets dave ring for 3 s before it cancels: early while ringing.
        ringing = run_sipp(
            f"127.0.0.1:{proc.sip_port}",
            scenario="call_cancel.xml",
            workdir=tmp_path / "ringing",
            inf=inject(tmp_path, "ringing.csv", f"alice;{DOMAIN};dave"),
            extra=["-au", "alice", "-ap", "alice-pw", "-d", "3000", "-m", "1"],
            background=True,
            timeout=20,
        )
        assert isinstance(ringing, subprocess.Popen)
        early = 0.0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and early < 1:
            early = values(proc)["sipmesh_early_dialogs"]
            time.sleep(0.05)
        assert early == 1
        assert ringing.wait(20) == 0

        after = values(proc)
        assert after["sipmesh_processed_dialogs_total"] == ANSWERED
        assert after["sipmesh_active_dialogs"] == 0  # every call got its BYE
        assert after["sipmesh_early_dialogs"] == 0
        assert after["sipmesh_failed_dialogs_total"] == 2  # the 486 and the CANCEL's 487
        assert after["sipmesh_expired_dialogs_total"] == 0
        # Server transactions: each call's INVITE twice (407 challenge, then with
        # credentials), the BYE of each answered call, the CANCEL; plus REGISTERs.
        invites = after["sipmesh_UAS_transactions_total"] - before["sipmesh_UAS_transactions_total"]
        assert invites == 2 * (ANSWERED + 2) + ANSWERED + 1
        assert after["sipmesh_UAC_transactions_total"] == 0

        # The admin API's stats verb shows them under Kamailio's group:name.
        out = ctl("--admin", f"127.0.0.1:{proc.grpc_port}", "stats", "dialog")
        assert f"dialog:processed_dialogs = {ANSWERED}" in out.splitlines()
        assert "dialog:active_dialogs = 0" in out.splitlines()
    finally:
        for uas in uases:
            uas.kill()
            uas.wait(5)
        if ringing is not None and ringing.poll() is None:
            ringing.kill()
            ringing.wait(5)
        assert proc.stop() == 0, proc.log()
