"""Running sipp against sipmesh: scenarios, bounded runs, parsed statistics."""

from __future__ import annotations

import csv
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    stats: dict[str, str]


def run_sipp(
    remote: str,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    workdir: Path,
    calls: int = 1,
    rate: float = 10,
    local_port: int | None = None,
    transport: str = "u1",
    extra: list[str] | None = None,
    inf: Path | None = None,
    timeout: float = 30,
    background: bool = False,
) -> SippResult | subprocess.Popen[bytes]:
    """Run sipp as a client (or server with builtin 'uas') and return its outcome."""
    cmd = ["sipp", remote]
    if scenario is not None:
        cmd += ["-sf", str(SCENARIOS / scenario)]
    elif builtin is not None:
        cmd += ["-sn", builtin]
    # The local address sipp binds: ::1 for an IPv6 remote ("[::1]:port"), else 127.0.0.1.
    cmd += ["-i", "::1" if remote.startswith("[") else "127.0.0.1"]
    # Always a port of our own: sipp's default, 5060, may be taken by another UA.
    if local_port is None:
        from tests.e2e.procs import free_port

        local_port = free_port(socket.SOCK_DGRAM)
    cmd += ["-p", str(local_port)]
    cmd += ["-t", transport, "-nostdin"]
    if not background:
        cmd += ["-m", str(calls), "-r", str(rate)]
    cmd += ["-timeout", f"{int(timeout)}s", "-trace_stat", "-stf", str(workdir / "stat.csv")]
    cmd += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    cmd += extra or []
    workdir.mkdir(parents=True, exist_ok=True)
    if background:
        return subprocess.Popen(
            cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 15, check=False
    )
    del started
    stats = _read_stats(workdir / "stat.csv")
    return SippResult(
        returncode=proc.returncode,
        successful=int(stats.get("SuccessfulCall(C)", "0") or 0),
        failed=int(stats.get("FailedCall(C)", "0") or 0),
        output=proc.stdout + proc.stderr + _read(workdir / "errors.log"),
        stats=stats,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def _read_stats(path: Path) -> dict[str, str]:
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))
