"""Smoke test: bench/bench_media_relay.py runs end to end with tiny counts (no timing
assertions); rtpengine is measured too when installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_media_relay.py"


def test_bench_media_relay_reports_both_relays() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--streams",
            "2",
            "--seconds",
            "0.4",
            "--flood-seconds",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines
        if line.split()[:1] in (["sipmesh"], ["rtpengine"])
    }
    assert "sipmesh" in rows
    # 2 calls x 2 directions x 50 pps: every paced packet was relayed and counted.
    assert float(rows["sipmesh"][0]) > 0
    assert float(rows["sipmesh"][5]) > 0  # flood pps
    if shutil.which("rtpengine"):
        assert "rtpengine" in rows
        assert any(line.startswith("ratio sipmesh/rtpengine:") for line in lines)
    else:
        assert any("rtpengine: not installed" in line for line in lines)
