"""The process's gRPC server: the services' servicers plus the standard health service.

Health reports the real state of each module under ``sipmesh.<module>`` and the
whole process under the empty service name, refreshed from the module manager.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sipmesh.runtime.context import Runtime

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcServerService:
    def __init__(self, runtime: Runtime, refresh: float = 0.5) -> None:
        self._runtime = runtime
        self._refresh = refresh
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.keepalive_time_ms", 20000),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        for register in self._runtime.grpc_registrations:
            register(self._server)
        address = self._runtime.config.grpc
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot listen for gRPC on {address}")
        await self._server.start()
        await self._publish_health()
        self._task = asyncio.create_task(self._refresh_loop())

    async def _publish_health(self) -> None:
        manager = self._runtime.manager
        for name in manager.states():
            status = _SERVING if manager.service_ready(name) else _NOT_SERVING
            await self._health.set(f"sipmesh.{name}", status)
        await self._health.set("", _SERVING if manager.ready() else _NOT_SERVING)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            await self._publish_health()

    async def stop(self, grace: float) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    def ready(self) -> bool:
        return self.port != 0
