"""Smoke test: bench/bench_stream.py runs and reports both figures (tiny counts)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench" / "bench_stream.py"


@pytest.mark.parametrize("extra", [[], ["--separate"]])
def test_bench_stream_reports_both_modes(extra: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "60", "--concurrency", "4", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stream = re.search(r"batched stream:\s+([\d.]+) µs/call", result.stdout)
    unary = re.search(r"unary per call:\s+([\d.]+) µs/call", result.stdout)
    assert stream is not None, result.stdout
    assert unary is not None, result.stdout
    assert float(stream.group(1)) > 0
    assert float(unary.group(1)) > 0
