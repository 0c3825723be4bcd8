"""What every part of the admin service shares: its dependencies and the audit trail.

Every write (through gRPC or REST) is published as an AuditEvent on
``audit.admin`` (events.proto), with its arguments minus secrets and whether it
worked. The REST layer and the gRPC guard (auth.py) say who asked — the token's
role and the remote address — through `acting_as`/`acting`; a write made in
process with no caller named (``sipmesh ctl --db``) appears as ``local``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from google.protobuf.message import Message as ProtoMessage

from sipmesh.clients.errors import Unavailable
from sipmesh.clients.interfaces import RegistrarClient
from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.runtime.cluster import ClusterClient
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database
from sipmesh.state.kv import KVStore

log = logging.getLogger("sipmesh.admin")

AUDIT_SUBJECT = "audit.admin"
SECRET_FIELDS = frozenset({"password"})


@dataclass(frozen=True)
class Actor:
    name: str
    remote: str = ""


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "sipmesh_admin_actor", default=None
)
_LOCAL = Actor("local")


def acting_as(actor: Actor) -> contextvars.Token[Actor | None]:
    """Name the caller of the writes made in this context (the REST layer does)."""
    return _ACTOR.set(actor)


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[None]:
    """`acting_as` for the duration of a block (one gRPC call)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def _arguments(request: object) -> dict[str, str]:
    if not isinstance(request, ProtoMessage):
        return {}
    out: dict[str, str] = {}
    for descriptor, value in request.ListFields():
        if descriptor.name in SECRET_FIELDS:
            out[descriptor.name] = "***"
        else:
            out[descriptor.name] = str(value)[:200]
    return out


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def audited(operation: str) -> Callable[[F], F]:
    """Publish an AuditEvent for every call of the decorated write method."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def run(self: AdminBase, request: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await method(self, request, *args, **kwargs)
            except Exception as exc:
                await self.audit(operation, request, ok=False, error=str(exc))
                raise
            await self.audit(operation, request, ok=True)
            return result

        return cast(F, run)

    return wrap


class AdminBase:
    """Dependencies; `kv`, `bus`, `cluster`, `registrar` are None where absent
    (``sipmesh ctl --db`` runs the table operations with the database alone)."""

    def __init__(
        self,
        *,
        config: SipmeshConfig,
        db: Database,
        kv: KVStore | None = None,
        bus: EventBus | None = None,
        cluster: ClusterClient | None = None,
        registrar: RegistrarClient | None = None,
        clock: Callable[[], float] = time.time,
        fanout_timeout: float = 2.0,
    ) -> None:
        self.config = config
        self.db = db
        self.kv = kv
        self.bus = bus
        self.cluster = cluster
        self.registrar = registrar
        self.clock = clock
        self.fanout_timeout = fanout_timeout
        self.instance_id = config.instance_id

    def need_kv(self) -> KVStore:
        if self.kv is None:
            raise Unavailable("this operation needs the live state store (use --admin)")
        return self.kv

    def need_bus(self) -> EventBus:
        if self.bus is None:
            raise Unavailable("this operation needs the event bus (use --admin)")
        return self.bus

    def need_cluster(self) -> ClusterClient:
        if self.cluster is None:
            raise Unavailable("this operation needs the cluster (use --admin)")
        return self.cluster

    def need_registrar(self) -> RegistrarClient:
        if self.registrar is None:
            raise Unavailable("no registrar is reachable (location operations need one)")
        return self.registrar

    def wait(self, timeout: float | None) -> float:
        """The fan-out wait: the configured one, shortened to the caller's deadline."""
        if timeout is None:
            return self.fanout_timeout
        return max(0.05, min(self.fanout_timeout, timeout - 0.2))

    async def audit(self, operation: str, request: object, *, ok: bool, error: str = "") -> None:
        actor = _ACTOR.get() or _LOCAL
        args = _arguments(request)
        target = args.get("username") or args.get("aor") or args.get("ip") or ""
        if "domain" in args and "username" in args:
            target = f"{args['username']}@{args['domain']}"
        log.info(
            "audit: %s %s by %s%s: %s",
            operation,
            target,
            actor.name,
            f" from {actor.remote}" if actor.remote else "",
            "ok" if ok else f"failed: {error}",
        )
        if self.bus is None:
            return
        envelope = events_pb2.Envelope(
            id=f"{self.instance_id}-{time.time_ns()}",
            time=self.clock(),
            instance=self.instance_id,
            service="admin",
            audit=events_pb2.AuditEvent(
                actor=actor.name,
                operation=operation,
                target=target,
                arguments=args,
                ok=ok,
                error=error,
                remote=actor.remote,
            ),
        )
        try:
            await self.bus.publish(AUDIT_SUBJECT, envelope.SerializeToString())
        except Exception as exc:  # the write is done; losing its audit record is logged
            log.warning("audit event not published: %s", exc)
