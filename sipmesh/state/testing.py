"""Helpers for tests of the state backends (this suite's and the services').

Private server processes for reconnection tests (kill, restart, same port): each
server runs on a free loopback port and is stopped by the test that started it.
The ``*Case`` records bundle a store under test with what the contract tests need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sipmesh.state.clock import FakeClock
from sipmesh.state.kv import KVStore
from sipmesh.state.location import LocationStore


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ServerProcess:
    """One server command that can be stopped and started again on the same port."""

    def __init__(self, argv: list[str], port: int, *, user: str | None = None) -> None:
        self.argv = argv
        self.port = port
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = self.argv
        if self.user is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


def redis_server(port: int) -> ServerProcess:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return ServerProcess(argv, port)


def nats_server(port: int, store_dir: Path) -> ServerProcess:
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    argv = [exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    return ServerProcess(argv, port)


@dataclass
class KVCase:
    kind: str
    store: KVStore
    #: Makes ``seconds`` pass for the store (fake clock, or a real sleep on Redis).
    advance: Callable[[float], Awaitable[None]]
    #: Another handle on the same data (a second Redis connection pool).
    open_peer: Callable[[], KVStore]


@dataclass
class LocCase:
    kind: str
    store: LocationStore
    clock: FakeClock
    open_peer: Callable[[], LocationStore]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port, trust auth.

    PostgreSQL refuses to run as root, so as root the cluster runs as the
    ``postgres`` system user (runuser); its directory is made theirs.
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, base: Path, port: int, *, user: str = "postgres") -> None:
        self.dir = base / "pgdata"
        self.port = port
        self.user = user if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.dir.parent, self.user)
            os.chmod(self.dir.parent, 0o700)
        self._run(
            str(self.BIN / "initdb"),
            "-D",
            str(self.dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        log = str(self.dir.parent / "postgres.log")
        self._run(
            str(self.BIN / "pg_ctl"),
            "-D",
            str(self.dir),
            "-l",
            log,
            "-o",
            opts,
            "-w",
            "-t",
            "30",
            "start",
        )
        wait_port(self.port)

    def stop(self) -> None:
        try:
            self._run(
                str(self.BIN / "pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop"
            )
        except subprocess.CalledProcessError:
            pass  # already stopped
