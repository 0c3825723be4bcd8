"""The admin target: gRPC servicer, REST API and web console on ``config.admin``.

Tokens (docs/admin.md): with no ``admin_api.write_token`` configured, a random one
is generated at every start and written to ``admin_api.token_file`` (mode 0600) —
its path is logged, never the token — so the API is never open without a token.
REST and gRPC check the same tokens; they are resolved once, in `start`, which runs
before the process's gRPC server starts (it is a frontend module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from functools import partial
from pathlib import Path

import uvicorn

from sipmesh.admin.auth import TokenGuard
from sipmesh.admin.rest import build_app
from sipmesh.admin.service import AdminService
from sipmesh.clients.admin_auth import Tokens
from sipmesh.clients.grpc_servers import add_admin_servicer
from sipmesh.runtime.backends import BusModule, DbModule, KvModule
from sipmesh.runtime.cluster import ClusterClient
from sipmesh.runtime.config import SipmeshConfig, split_hostport
from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.admin")

CONSOLE_DIR = Path(__file__).resolve().parent / "console"


def resolve_tokens(config: SipmeshConfig) -> Tokens:
    settings = config.admin_api
    write = settings.write_token.get_secret_value()
    read = settings.read_token.get_secret_value()
    if not write:
        write = secrets.token_urlsafe(32)
        path = settings.token_path().resolve()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(write + "\n")
        os.chmod(path, 0o600)
        log.warning(
            "admin: no admin_api.write_token configured; generated one in %s (mode 0600)", path
        )
    return Tokens(write=write, read=read)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process's signals belong to `serve`."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class AdminModule:
    """Runs the REST API + console; the gRPC servicer is registered in `create`."""

    def __init__(self, runtime: Runtime, service: AdminService, guard: TokenGuard) -> None:
        self._runtime = runtime
        self.service = service
        self._guard = guard
        self._host, self._port = split_hostport(runtime.config.admin)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        runtime = self._runtime
        if runtime.clients.is_available("registrar"):
            self.service.registrar = await runtime.clients.registrar()
        tokens = resolve_tokens(runtime.config)
        self._guard.tokens = tokens
        console = CONSOLE_DIR if runtime.config.admin_api.console else None
        app = build_app(self.service, tokens, console_dir=console)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        # Bind here, not in uvicorn: its bind error is a sys.exit() (see runtime/http.py).
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(
                f"admin: cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="admin-http")
        while not self._server.started:
            if self._task.done():
                raise RuntimeError(f"admin: HTTP listener failed: {self._task.exception()}")
            await asyncio.sleep(0.01)
        log.info("admin API and console on http://%s:%d/", self._host, self.port)

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit, TimeoutError):
                await asyncio.wait_for(self._task, timeout=max(grace, 1.0))

    def ready(self) -> bool:
        return self._server is not None and self._server.started

    @property
    def port(self) -> int:
        if self._server is None:
            return 0
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0


def create(runtime: Runtime) -> AdminModule:
    config = runtime.config
    kv = runtime.get("kv", KvModule).store
    bus = runtime.get("bus", BusModule).bus
    service = AdminService(
        config=config,
        db=runtime.get("db", DbModule).db,
        kv=kv,
        bus=bus,
        cluster=ClusterClient(bus, kv),
        clock=runtime.clock,
        fanout_timeout=config.admin_api.fanout_timeout,
    )
    guard = TokenGuard()
    runtime.grpc_registrations.append(partial(add_admin_servicer, service=service, guard=guard))
    return AdminModule(runtime, service, guard)
