"""The probe and metrics endpoint every process serves: /ready, /live, /metrics.

Starlette behind uvicorn: a well-kept HTTP/1.1 server is cheaper to trust than a
hand-written one, and FastAPI (the admin API) already brings both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sipmesh.runtime.config import split_hostport
from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.http")


def build_app(runtime: Runtime) -> Starlette:
    manager = runtime.manager

    async def ready(_: Request) -> Response:
        states = {name: state.value for name, state in manager.states().items()}
        ready_map = {name: manager.service_ready(name) for name in states}
        ok = manager.ready()
        return JSONResponse(
            {
                "ready": ok,
                "instance": runtime.config.instance_id,
                "services": states,
                "service_ready": ready_map,
            },
            status_code=200 if ok else 503,
        )

    async def live(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/ready", ready),
            Route("/live", live),
            Route("/metrics", metrics),
        ]
    )


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process's signals belong to `serve`."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class HttpService:
    """Serves the probes. Started first, so /live answers while the rest starts."""

    def __init__(self, runtime: Runtime) -> None:
        self._host, self._port = split_hostport(runtime.config.http)
        config = uvicorn.Config(
            build_app(runtime), log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Bind here rather than in uvicorn: uvicorn answers a bind error with
        # sys.exit(), which would escape the event loop instead of failing this module.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise RuntimeError(
                f"cannot listen on {self._host}:{self._port}: {exc.strerror}"
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                failure = self._task.exception()
                raise RuntimeError(f"HTTP listener failed: {failure or 'did not start'}")
            await asyncio.sleep(0.01)

    async def stop(self, grace: float) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await asyncio.wait_for(self._task, timeout=max(grace, 1.0))

    def ready(self) -> bool:
        return self._server.started

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else 0
