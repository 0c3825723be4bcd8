"""sipp runs for the cluster tests: bounded load runs with per-second statistics."""

from __future__ import annotations

import csv
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.sipp import SCENARIOS

HERE = Path(__file__).resolve().parent / "scenarios"


def inject(workdir: Path, name: str, *rows: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text("SEQUENTIAL\n" + "".join(f"{row}\n" for row in rows))
    return path


def scenario_from(workdir: Path, source: str, name: str, **replace: str) -> Path:
    """A copy of an e2e scenario with literal replacements (sipp has no parameters)."""
    text = (SCENARIOS / source).read_text()
    for old, new in replace.items():
        assert old in text, f"{old!r} not in {source}"
        text = text.replace(old, new)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(text)
    return path


@dataclass
class SippRun:
    """One sipp client run in the background; `finish()` collects its statistics."""

    name: str
    workdir: Path
    cmd: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    rows: list[dict[str, str]] = field(default_factory=list)
    returncode: int | None = None

    def start(self) -> SippRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        with (self.workdir / "sipp.out").open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def finish(self, timeout: float) -> SippRun:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait(10)
        try:
            text = (self.workdir / "stat.csv").read_text()
        except OSError:
            text = ""
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self.rows = [dict(r) for r in csv.DictReader(lines, delimiter=";")]
        return self

    def _last(self, column: str) -> int:
        if not self.rows:
            return 0
        return int(self.rows[-1].get(column) or 0)

    @property
    def attempted(self) -> int:
        return self._last("TotalCallCreated")

    @property
    def succeeded(self) -> int:
        return self._last("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._last("FailedCall(C)")

    def in_flight_near(self, offset: float, window: float = 1.5) -> int:
        """Most calls sipp reported in progress within `window` s of `offset` s after start.

        sipp samples CurrentCall every second (-fd 1); row i is taken about i+1 seconds
        after the start."""
        counts = [
            int(row.get("CurrentCall") or 0)
            for i, row in enumerate(self.rows)
            if abs((i + 1) - offset) <= window
        ]
        return max(counts, default=0)

    def output(self) -> str:
        parts = []
        for name in ("sipp.out", "errors.log"):
            try:
                parts.append((self.workdir / name).read_text(errors="replace")[-3000:])
            except OSError:
                pass
        return "\n".join(parts)


def sipp_client(
    name: str,
    workdir: Path,
    remote: str,
    scenario: Path,
    *,
    calls: int,
    rate: float,
    inf: Path,
    user: str,
    password: str,
    transport: str = "u1",
    timeout: float = 60,
    limit: int = 50,
) -> SippRun:
    wd = workdir / name
    cmd = [
        "sipp", remote, "-sf", str(scenario), "-i", "127.0.0.1", "-t", transport,
        "-m", str(calls), "-r", str(rate), "-l", str(limit), "-nostdin",
        "-inf", str(inf), "-au", user, "-ap", password,
        "-timeout", f"{int(timeout)}s", "-trace_stat", "-stf", str(wd / "stat.csv"),
        "-fd", "1", "-trace_msg", "-trace_err", "-error_file", str(wd / "errors.log"),
    ]  # fmt: skip
    return SippRun(name, wd, cmd)
