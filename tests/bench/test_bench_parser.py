"""The parser benchmark script runs end to end (tiny counts, no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_parser.py"


def test_bench_parser_runs_and_reports_every_message() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--iterations", "3", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["message", "sipmesh", "µs"]
    rows = lines[1:]
    assert [row.split()[0] for row in rows] == ["INVITE", "REGISTER+auth", "200"]
    for row in rows:
        # sipmesh µs, sippy µs and their ratio, all numbers.
        numbers = row.split()[-3:]
        assert float(numbers[0]) > 0
        assert float(numbers[1]) > 0
        assert numbers[2].endswith("x")
