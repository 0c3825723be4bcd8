"""Real sipmesh processes for end-to-end tests: start, wait for /ready, stop."""

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
SIPMESH = [sys.executable, "-m", "sipmesh"]
# The admin write token of every process `make_process` describes, and what `ctl`
# sends (tests of the generated token file set SIPMESH_ADMIN_API__WRITE_TOKEN="").
ADMIN_TOKEN = "e2e-admin-token"


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP at the moment of asking."""
    for _ in range(50):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(family, other) as second:
                try:
                    second.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


@dataclass
class SipmeshProcess:
    """One `sipmesh serve` process with its ports."""

    name: str
    args: list[str]
    env: dict[str, str]
    http_port: int
    grpc_port: int
    sip_port: int
    admin_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*SIPMESH, "serve", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
            )

    def ready(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/ready", timeout=2
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, body = self.ready()
                if status == 200:
                    return
                last = body
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s: {last}\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.http_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())


def make_process(
    name: str,
    workdir: Path,
    *,
    targets: str = "all",
    transports: Sequence[str] = ("udp", "tcp"),
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    sip_port: int | None = None,
) -> SipmeshProcess:
    """A process description with fresh ports and its own SQLite file by default."""
    http_port, grpc_port, admin_port = free_port(), free_port(), free_port()
    port = sip_port or free_port(socket.SOCK_DGRAM, host)
    shown = f"[{host}]" if ":" in host else host
    args = ["--target", targets, "--http", f"127.0.0.1:{http_port}"]
    args += ["--grpc", f"127.0.0.1:{grpc_port}", "--admin", f"127.0.0.1:{admin_port}"]
    for transport in transports:
        args += ["--listen", f"{transport}:{shown}:{port}"]
    args += ["--instance-id", name]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_") or "TEST" in k}
    full_env.setdefault("SIPMESH_DB", f"sqlite:///{workdir / (name + '.sqlite')}")
    full_env["SIPMESH_GRACE_PERIOD"] = "2"
    full_env["SIPMESH_ADMIN_API__WRITE_TOKEN"] = ADMIN_TOKEN
    full_env.update(env or {})
    workdir.mkdir(parents=True, exist_ok=True)
    return SipmeshProcess(
        name=name,
        args=[*args, *extra_args],
        env=full_env,
        http_port=http_port,
        grpc_port=grpc_port,
        sip_port=port,
        admin_port=admin_port,
        log_path=workdir / f"{name}.log",
    )


def ctl(
    *args: str, env: Mapping[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> str:
    """Run `sipmesh ctl …` (with the processes' admin token) and return its stdout."""
    result = subprocess.run(
        [*SIPMESH, "ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIPMESH_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})},
        check=False,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"sipmesh ctl {' '.join(args)} failed: {result.stderr}")
    return result.stdout
