"""The LCR benchmark script runs end to end (small counts, no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_lcr.py"


def test_bench_lcr_runs_and_reports_load_and_lookups() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rules", "2000", "--lookups", "500", "--sqlite"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    values = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert values["rules"] == "2000"
    assert values["sqlite_load_seconds"].endswith("(2000 rules)")
    assert float(values["build_seconds"]) > 0
    assert values["lookups"].startswith("500 matched ")
    # Random 11-digit numbers hit some of the 2000 prefixes of 4-9 digits.
    assert int(values["lookups"].split()[-1]) > 0
    assert float(values["lookups_per_second"]) > 0
