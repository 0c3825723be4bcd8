"""Who talks to whom: the clients a service uses to reach the others.

A service asks for the router, the registrar, … through ``runtime.clients``. When
that target runs in this process the answer is the service object itself (it
implements its client Protocol, so the call is a plain await with no
serialisation); otherwise it is the gRPC client for ``endpoints.<service>``,
created once per process, started on first use and closed when the process stops.

Edges announce their gRPC address in the shared key/value store, so a component
holding a request for a flow owned by edge instance X (a NOTIFY, a call to a user
registered through another edge) can reach X directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from sipmesh.clients.interfaces import (
    EdgeClient,
    MediaRelayClient,
    PresenceClient,
    RegistrarClient,
    RouterClient,
)
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2
from sipmesh.state.kv import KVStore

if TYPE_CHECKING:
    from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.wiring")

EDGE_KEY = "edge-instance:"
ANNOUNCE_TTL = 30.0


class NotConfigured(LookupError):
    """A service is needed but neither runs here nor has an endpoint configured."""


class KvEdgeDirectory:
    """Edge instance id → gRPC address, kept in the shared key/value store."""

    def __init__(self, kv: KVStore) -> None:
        self._kv = kv

    async def address_of(self, edge_id: str) -> str:
        value = await self._kv.get(EDGE_KEY + edge_id)
        if value is None:
            raise LookupError(f"edge instance {edge_id!r} is not announced")
        return value.decode()

    async def announce(self, edge_id: str, address: str, ttl: float = ANNOUNCE_TTL) -> None:
        await self._kv.set(EDGE_KEY + edge_id, address.encode(), ttl=ttl)

    async def withdraw(self, edge_id: str) -> None:
        await self._kv.delete(EDGE_KEY + edge_id)

    async def instances(self) -> dict[str, str]:
        keys = await self._kv.scan(EDGE_KEY)
        values = await self._kv.get_many(keys)
        return {
            k.removeprefix(EDGE_KEY): v.decode() for k, v in zip(keys, values, strict=True) if v
        }


class EdgeAnnouncer:
    """Keeps this edge's entry in the directory fresh while it runs."""

    def __init__(self, directory: KvEdgeDirectory, edge_id: str, address: str) -> None:
        self._directory = directory
        self._edge_id = edge_id
        self._address = address
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._directory.announce(self._edge_id, self._address)
        self._task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_TTL / 3)
            try:
                await self._directory.announce(self._edge_id, self._address)
            except Exception as exc:  # the store may be down for a while: keep trying
                log.warning("cannot refresh edge announcement: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._directory.withdraw(self._edge_id)


class _LocalFirstEdgeClient:
    """Sends through the local edge when it owns the flow, else through the owner."""

    def __init__(self, local: EdgeClient | None, local_id: str, remote: Any) -> None:
        self._local = local
        self._local_id = local_id
        self._remote = remote

    async def send(
        self, request: common_pb2.OutboundRequest, *, timeout: float | None = None
    ) -> edge_pb2.SendResult:
        if self._local is not None and request.edge_id in ("", self._local_id):
            return await self._local.send(request, timeout=timeout)
        result: edge_pb2.SendResult = await self._remote.send(request, timeout=timeout)
        return result

    async def info(
        self, request: edge_pb2.EdgeInfoRequest, *, timeout: float | None = None
    ) -> edge_pb2.EdgeInfo:
        if self._local is not None:
            return await self._local.info(request, timeout=timeout)
        info: edge_pb2.EdgeInfo = await self._remote.info(request, timeout=timeout)
        return info


def advertised_grpc_address(bind: str, advertise: str) -> str:
    """The address other processes use to reach this process's gRPC server."""
    if advertise:
        return advertise
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostbyname(socket.gethostname())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Clients:
    """The per-process set of clients to other services."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._remote: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    def _local(self, target: str, kind: Any) -> Any:
        """The service object of ``target`` when it runs here (checked against ``kind``)."""
        if target in self._runtime.local_targets() and self._runtime.has(target):
            service = self._runtime.get(target, object)
            if not isinstance(service, kind):
                raise TypeError(f"{target} does not implement {kind.__name__}")
            return service
        return None

    async def _remote_client(self, name: str, endpoint: str, factory: Any) -> Any:
        async with self._lock:
            client = self._remote.get(name)
            if client is None:
                if not endpoint:
                    raise NotConfigured(
                        f"{name} does not run in this process and endpoints.{name} is not set"
                    )
                client = factory(endpoint)
                await client.start()
                self._remote[name] = client
            return client

    def is_available(self, target: str) -> bool:
        """True when ``target`` runs here or has an endpoint configured."""
        endpoint = getattr(self._runtime.config.endpoints, target.replace("-", "_"))
        return target in self._runtime.local_targets() or bool(endpoint)

    async def router(self) -> RouterClient:
        local: RouterClient | None = self._local("router", RouterClient)
        if local is not None:
            return local
        from sipmesh.clients.grpc_clients import GrpcRouterClient

        client: RouterClient = await self._remote_client(
            "router", self._runtime.config.endpoints.router, GrpcRouterClient
        )
        return client

    async def registrar(self) -> RegistrarClient:
        local: RegistrarClient | None = self._local("registrar", RegistrarClient)
        if local is not None:
            return local
        from sipmesh.clients.grpc_clients import GrpcRegistrarClient

        client: RegistrarClient = await self._remote_client(
            "registrar", self._runtime.config.endpoints.registrar, GrpcRegistrarClient
        )
        return client

    async def presence(self) -> PresenceClient:
        local: PresenceClient | None = self._local("presence", PresenceClient)
        if local is not None:
            return local
        from sipmesh.clients.grpc_clients import GrpcPresenceClient

        client: PresenceClient = await self._remote_client(
            "presence", self._runtime.config.endpoints.presence, GrpcPresenceClient
        )
        return client

    async def media_relay(self) -> MediaRelayClient:
        local: MediaRelayClient | None = self._local("media-relay", MediaRelayClient)
        if local is not None:
            return local
        from sipmesh.clients.grpc_clients import GrpcMediaRelayClient

        client: MediaRelayClient = await self._remote_client(
            "media_relay", self._runtime.config.endpoints.media_relay, GrpcMediaRelayClient
        )
        return client

    def edge_directory(self) -> KvEdgeDirectory:
        from sipmesh.runtime.backends import KvModule

        return KvEdgeDirectory(self._runtime.get("kv", KvModule).store)

    async def edge(self) -> EdgeClient:
        """Sends through whichever edge instance owns the flow of a request."""
        async with self._lock:
            client = self._remote.get("edge")
            if client is None:
                from sipmesh.clients.grpc_clients import GrpcEdgeClient

                remote = GrpcEdgeClient(
                    self.edge_directory(), self._runtime.config.endpoints.edge or None
                )
                await remote.start()
                self._remote["edge_grpc"] = remote
                client = _LocalFirstEdgeClient(
                    self._local("edge", EdgeClient), self._runtime.config.instance_id, remote
                )
                self._remote["edge"] = client
        edge: EdgeClient = client
        return edge

    async def close(self) -> None:
        clients = [c for c in self._remote.values() if hasattr(c, "close")]
        self._remote.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
