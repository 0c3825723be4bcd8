"""Bounded sipp runs with their outcome: calls, failures, retransmissions, RTT.

Each run is ``sipp -r RATE -m CALLS`` with ``-trace_stat`` (final counters) and
``-trace_rtt -rtt_freq 1`` (one response time per call, the ``rtd`` of the
scenario: the time from the first message of the call to the response marked
``rtd="true"``), from which p50/p99 are computed.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


@dataclass
class SippRun:
    rate: float
    calls: int
    successful: int
    failed: int
    retransmissions: int
    elapsed: float
    p50_ms: float
    p99_ms: float
    returncode: int
    output: str

    @property
    def failure_ratio(self) -> float:
        done = self.successful + self.failed
        return 1.0 if done == 0 else self.failed / done

    @property
    def achieved_rate(self) -> float:
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0


def sipp_cmd(
    remote: str,
    scenario: str,
    *,
    workdir: Path,
    rate: float | None = None,
    calls: int | None = None,
    local_port: int | None = None,
    inf: Path | None = None,
    timeout: float = 30.0,
    extra: list[str] | None = None,
    transport: str = "u1",
) -> list[str]:
    cmd = ["sipp"]
    if remote:
        cmd.append(remote)
    cmd += ["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-t", transport, "-nostdin"]
    if local_port is not None:
        cmd += ["-p", str(local_port)]
    if transport == "un":
        # One socket per call: sipp refuses to start unless its socket cap is
        # below the open-files limit.
        cmd += ["-max_socket", "10000"]
    if rate is not None:
        # -l bounds the calls in flight, so an overloaded server shows up as failures
        # and retransmissions instead of an unbounded queue in sipp.
        cmd += ["-r", f"{rate:g}", "-l", str(max(50, int(rate * 2)))]
    if calls is not None:
        cmd += ["-m", str(calls)]
    cmd += ["-timeout", f"{int(timeout)}s", "-timeout_error", "-max_recv_loops", "10000"]
    cmd += ["-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "60"]
    cmd += ["-trace_rtt", "-rtt_freq", "1", "-buff_size", "4194304"]
    cmd += ["-trace_err", "-error_file", str(workdir / "errors.log")]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    return cmd + (extra or [])


def start_uas(workdir: Path, port: int, scenario: str) -> subprocess.Popen[bytes]:
    """A background sipp UAS (answers calls or MESSAGEs) on 127.0.0.1:port."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = sipp_cmd("", scenario, workdir=workdir, local_port=port, timeout=3600)
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(
    remote: str,
    scenario: str,
    *,
    workdir: Path,
    rate: float,
    calls: int,
    inf: Path | None = None,
    timeout: float = 10.0,
    extra: list[str] | None = None,
    transport: str = "u1",
) -> SippRun:
    """One bounded run; returns when sipp has finished every call (or timed out)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("*_rtt.csv"):
        old.unlink()
    cmd = sipp_cmd(
        remote,
        scenario,
        workdir=workdir,
        rate=rate,
        calls=calls,
        inf=inf,
        timeout=timeout,
        extra=extra,
        transport=transport,
    )
    limit = calls / rate + timeout + 30
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, capture_output=True, text=True, timeout=limit, check=False
        )
        code, output = proc.returncode, proc.stdout[-2000:] + proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        code, output = -1, "sipp did not finish"
    stats = _last_row(workdir / "stat.csv")
    rtts = sorted(_rtts(workdir))
    return SippRun(
        rate=rate,
        calls=calls,
        successful=int(stats.get("SuccessfulCall(C)", "0") or 0),
        failed=int(stats.get("FailedCall(C)", "0") or 0),
        retransmissions=int(stats.get("Retransmissions(C)", "0") or 0),
        elapsed=_seconds(stats.get("ElapsedTime(C)", "")),
        p50_ms=_quantile(rtts, 0.50),
        p99_ms=_quantile(rtts, 0.99),
        returncode=code,
        output=output,
    )


def _last_row(path: Path) -> dict[str, str]:
    try:
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    except OSError:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}


def _seconds(text: str) -> float:
    """sipp's ElapsedTime, "HH:MM:SS:mmmuuu" (cumulative), in seconds."""
    parts = text.split(":")
    if len(parts) < 3:
        return 0.0
    frac = float("0." + parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0.0
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2]) + frac


def _rtts(workdir: Path) -> list[float]:
    """Response times (ms) of every call, from sipp's *_rtt.csv files."""
    out: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            fields = line.split(";")
            if len(fields) >= 2:
                try:
                    out.append(float(fields[1]))
                except ValueError:
                    continue
    return out


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]
