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
