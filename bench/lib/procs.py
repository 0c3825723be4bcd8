"""Processes under test: sipmesh (embedded or split) and Kamailio, with CPU and memory.

CPU is read from /proc/<pid>/stat (utime + stime, clock ticks) so the runner needs
no psutil; peak memory is VmHWM from /proc/<pid>/status. Every process the runner
starts is tracked by its pid and stopped by that pid only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP at the moment of asking."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # The command name may hold spaces: fields start after the closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A kB figure of /proc/<pid>/status (VmHWM, VmRSS), 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_pids(pid: int) -> list[int]:
    """Direct children of a process (Kamailio's workers)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


@dataclass
class Proc:
    """One started server process; ``pids()`` includes its workers (Kamailio forks)."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    http_port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def pids(self) -> list[int]:
        return [self.pid, *children_pids(self.pid)]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids())

    def peak_kb(self) -> int:
        return sum(status_kb(p, "VmHWM") for p in self.pids())

    def rss_kb(self) -> int:
        return sum(status_kb(p, "VmRSS") for p in self.pids())

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(self, timeout: float = 40.0, sip_port: int = 0) -> None:
        """/ready for sipmesh (http_port), an OPTIONS answer for Kamailio (sip_port)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            if self.http_port and _http_ready(self.http_port):
                return
            if sip_port and _sip_answers(sip_port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _http_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            return r.status == 200 and bool(json.loads(r.read()).get("ready"))
    except (OSError, ValueError, urllib.error.HTTPError):
        return False


def _sip_answers(port: int) -> bool:
    """Whether something answers an OPTIONS on 127.0.0.1:port over UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        lport = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bKready{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: ready-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            s.sendto(msg.encode(), ("127.0.0.1", port))
            data = s.recv(4096)
        except OSError:
            return False
        return data.startswith(b"SIP/2.0 ")


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a sipmesh process: no inherited SIPMESH_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env["PYTHONPATH"] = str(REPO)
    env["SIPMESH_GRACE_PERIOD"] = "1"
    # The benchmark drives every call from 127.0.0.1: pike would ban sipp (Kamailio's
    # bench config loads no pike either).
    env["SIPMESH_EDGE__ANTIFLOOD"] = "false"
    env["SIPMESH_TELEMETRY__LOG_LEVEL"] = "warning"
    env.update(extra or {})
    return env


def sipmesh_proc(
    name: str,
    workdir: Path,
    *,
    targets: str,
    sip_port: int | None,
    domain: str,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> Proc:
    """A `sipmesh serve` process with fresh HTTP/gRPC/admin ports."""
    http, grpc, admin = free_port(), free_port(), free_port()
    cmd = [python, "-m", "sipmesh", "serve", "--target", targets, "--domain", domain]
    cmd += ["--http", f"127.0.0.1:{http}", "--grpc", f"127.0.0.1:{grpc}"]
    cmd += ["--admin", f"127.0.0.1:{admin}", "--instance-id", name]
    if sip_port is not None:
        cmd += ["--listen", f"udp:127.0.0.1:{sip_port}"]
    proc = Proc(name, cmd, base_env(env), workdir / f"{name}.log", http_port=http)
    proc.extra = {"grpc": grpc, "sip": sip_port or 0}
    return proc


def run_ctl(args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sipmesh", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=base_env(env),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sipmesh ctl {' '.join(args)}: {result.stderr}")
    return result.stdout
