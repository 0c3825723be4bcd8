"""Smoke test: bench/bench_accounting.py runs and reports a rate (tiny counts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_accounting.py"


def test_bench_accounting_reports_events_per_second(postgres_admin_url: str, nats_url: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "20", "--workers", "2", "--timeout", "60",
         "--postgres", postgres_admin_url, "--nats", nats_url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "acc rows: 40  closed cdrs: 20" in result.stdout
    rate = re.search(r"accounting to PostgreSQL: (\d+) events/s", result.stdout)
    assert rate is not None, result.stdout
    assert int(rate.group(1)) > 0
