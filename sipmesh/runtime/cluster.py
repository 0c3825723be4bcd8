"""Cluster-wide questions: every process answers for itself, the admin service merges.

Kamailio answers ``kamcmd stats.get_statistics`` for one process tree; sipmesh runs
many processes, so the admin service asks them all at once over the bus and names
those that stay silent. Each process runs an `InstanceResponder` (the internal
module "cluster", which every target depends on):

- it announces itself in the shared key/value store (``instance:<id>``, refreshed
  well within its TTL), which is how the asker knows whom to expect, and
- it answers requests published on ``cluster.request`` by publishing a reply on the
  request's ``reply_to`` subject: its statistics (the values of its Prometheus
  registry), its instance info (targets, version, health per module, uptime), a
  log-level change, a ping.

`ClusterClient.gather` publishes one request, collects replies until every
announced instance answered or the timeout passed, and returns the answers with
the instances that did not answer. This is control-plane traffic (an operator's
command, never per SIP message), so the payloads are small JSON documents rather
than event Envelopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from sipmesh.state.bus import EventBus, Message, Subscription
from sipmesh.state.kv import KVStore

if TYPE_CHECKING:
    from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.cluster")

REQUEST_SUBJECT = "cluster.request"
REPLY_PREFIX = "cluster.reply."
INSTANCE_KEY = "instance:"
ANNOUNCE_TTL = 30.0
ANNOUNCE_EVERY = 10.0
KINDS = ("stats", "info", "log_level", "ping")

JsonDict = dict[str, Any]


# Kamailio's statistic groups for the names sipmesh keeps (kamctl stats GROUP).
_GROUPS: dict[str, str] = {
    **dict.fromkeys(
        (
            "rcv_requests",
            "fwd_requests",
            "drop_requests",
            "err_requests",
            "rcv_replies",
            "fwd_replies",
            "drop_replies",
            "err_replies",
            "bad_URIs_rcvd",
            "unsupported_methods",
            "bad_msg_hdr",
            "rcv_keepalives",
        ),
        "core",
    ),
    **dict.fromkeys(
        (
            "accepted_regs",
            "rejected_regs",
            "max_expires",
            "min_expires",
            "default_expires",
            "max_contacts",
        ),
        "registrar",
    ),
    **dict.fromkeys(
        ("registered_users", "registered_contacts", "expired_contacts", "location_changes"),
        "usrloc",
    ),
    **dict.fromkeys(
        ("active_transactions", "transactions", "UAS_transactions", "UAC_transactions"), "tmx"
    ),
    **dict.fromkeys(
        (
            "active_dialogs",
            "early_dialogs",
            "processed_dialogs",
            "failed_dialogs",
            "expired_dialogs",
        ),
        "dialog",
    ),
    "sl_replies": "sl",
}
# Otherwise the first words name the module (sipmesh_media_relay_sessions → media_relay).
_PREFIX_GROUPS = (
    "media_relay",
    "router",
    "presence",
    "acc",
    "tcp",
    "tls",
    "ws",
    "dns",
    "antiflood",
    "nat",
    "auth",
    "drop",
)


def stat_name(metric: str) -> tuple[str, str]:
    """``sipmesh_accepted_regs`` → ("registrar", "accepted_regs")."""
    name = metric.removeprefix("sipmesh_")
    if name in _GROUPS:
        return _GROUPS[name], name
    for prefix in _PREFIX_GROUPS:
        if name.startswith(prefix + "_"):
            return prefix, name.removeprefix(prefix + "_")
    return "core", name


def metric_values(
    registry: CollectorRegistry, group: str = "", names: tuple[str, ...] = ()
) -> dict[str, float]:
    """Statistics as Kamailio names them, ``group:name`` → value.

    The registry's metric families keep Kamailio's names with the ``sipmesh_`` prefix;
    `stat_name` gives each its Kamailio group. Labelled samples append their labels
    (``core:rcv_requests{method=INVITE}``). Histogram buckets and ``_created``
    timestamps are left out; counts and sums stay.
    """
    out: dict[str, float] = {}
    for family in registry.collect():
        grp, stat = stat_name(family.name)
        if group and grp != group:
            continue
        if names and stat not in names:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            suffix = sample.name.removeprefix(family.name)
            if family.type == "counter" and suffix == "_total":
                suffix = ""
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            key = f"{grp}:{stat}{suffix}" + (f"{{{labels}}}" if labels else "")
            value = float(sample.value)
            out[key] = value if math.isfinite(value) else 0.0
    return out


@dataclass
class InstanceResponder:
    """Announces this process and answers cluster requests about it."""

    bus: EventBus
    kv: KVStore | None
    instance_id: str
    services: tuple[str, ...]
    version: str
    started_at: float
    registry: CollectorRegistry
    health: Callable[[], Mapping[str, str]]
    set_log_level: Callable[[str], None]
    clock: Callable[[], float]
    grpc_address: str = ""
    # More facts about this process's services (the router's active script version).
    details: Callable[[], JsonDict] | None = None
    _sub: Subscription | None = field(default=None, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    def info(self) -> JsonDict:
        return {
            "id": self.instance_id,
            "services": list(self.services),
            "host": socket.gethostname(),
            "version": self.version,
            "started_at": self.started_at,
            "uptime": max(0.0, self.clock() - self.started_at),
            "health": dict(self.health()),
            "grpc_address": self.grpc_address,
            **(self.details() if self.details is not None else {}),
        }

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(REQUEST_SUBJECT, self._on_request)
        if self.kv is not None:
            await self._announce()
            self._task = asyncio.create_task(self._announce_loop(), name="cluster-announce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            await self._sub.stop()
        if self.kv is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(INSTANCE_KEY + self.instance_id)

    async def _announce(self) -> None:
        assert self.kv is not None
        data = json.dumps(self.info()).encode()
        await self.kv.set(INSTANCE_KEY + self.instance_id, data, ttl=ANNOUNCE_TTL)

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_EVERY)
            try:
                await self._announce()
            except Exception as exc:  # the store is down: try again next round
                log.debug("cluster: announce failed: %s", exc)

    def answer(self, kind: str, args: Mapping[str, Any]) -> JsonDict:
        """The reply to one request (also used directly, without the bus)."""
        if kind == "stats":
            names = tuple(str(n) for n in args.get("names") or ())
            return {"values": metric_values(self.registry, str(args.get("group") or ""), names)}
        if kind == "info":
            return self.info()
        if kind == "log_level":
            level = str(args.get("level") or "").upper()
            if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                return {"error": f"unknown log level {level!r}"}
            self.set_log_level(level)
            return {"level": level}
        if kind == "ping":
            return {"time": self.clock(), "version": self.version}
        return {"error": f"unknown request kind {kind!r}"}

    async def _on_request(self, message: Message) -> None:
        try:
            request = json.loads(message.data)
            reply_to = str(request["reply_to"])
            kind = str(request["kind"])
            args = request.get("args") or {}
        except (ValueError, KeyError, TypeError):
            return
        if not reply_to.startswith(REPLY_PREFIX):
            return
        data = self.answer(kind, args)
        reply = {"instance": self.instance_id, "services": list(self.services), "data": data}
        await self.bus.publish(reply_to, json.dumps(reply).encode())


@dataclass(frozen=True)
class Gathered:
    """Replies by instance id, and the announced instances that did not answer."""

    answers: dict[str, JsonDict]
    services: dict[str, list[str]]
    missing: list[str]


class ClusterClient:
    """Asks every instance at once (what the admin service uses)."""

    def __init__(self, bus: EventBus, kv: KVStore | None) -> None:
        self._bus = bus
        self._kv = kv

    async def announced(self) -> dict[str, JsonDict]:
        """Instance id → its last announcement (from the key/value store)."""
        if self._kv is None:
            return {}
        keys = await self._kv.scan(INSTANCE_KEY)
        values = await self._kv.get_many(keys)
        out: dict[str, JsonDict] = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            with contextlib.suppress(ValueError):
                out[key.removeprefix(INSTANCE_KEY)] = json.loads(value)
        return out

    async def gather(
        self,
        kind: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float = 2.0,
        expected: set[str] | None = None,
    ) -> Gathered:
        """Publish one request and collect the replies (see the module docstring)."""
        wanted = set(await self.announced()) if expected is None else set(expected)
        answers: dict[str, JsonDict] = {}
        services: dict[str, list[str]] = {}
        done = asyncio.Event()

        async def on_reply(message: Message) -> None:
            try:
                reply = json.loads(message.data)
                instance = str(reply["instance"])
                answers[instance] = dict(reply.get("data") or {})
                services[instance] = [str(s) for s in reply.get("services") or ()]
            except (ValueError, KeyError, TypeError):
                return
            if wanted and wanted <= set(answers):
                done.set()

        inbox = REPLY_PREFIX + uuid.uuid4().hex
        sub = await self._bus.subscribe(inbox, on_reply)
        try:
            request = {"kind": kind, "args": dict(args or {}), "reply_to": inbox}
            await self._bus.publish(REQUEST_SUBJECT, json.dumps(request).encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
        finally:
            await sub.stop()
        missing = sorted(wanted - set(answers))
        return Gathered(answers, services, missing)


class ClusterModule:
    """The internal module "cluster": this process's `InstanceResponder`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._responder: InstanceResponder | None = None

    async def start(self) -> None:
        from sipmesh import __version__
        from sipmesh.runtime.backends import BusModule, KvModule
        from sipmesh.runtime.telemetry import set_log_level
        from sipmesh.runtime.wiring import advertised_grpc_address

        runtime = self._runtime
        config = runtime.config
        manager = runtime.manager

        def health() -> dict[str, str]:
            return {name: state.value for name, state in manager.states().items()}

        def details() -> JsonDict:
            # Duck-typed: the runtime must not import the router's package.
            if not runtime.has("router"):
                return {}
            version = getattr(runtime.get("router", object), "version", None)
            try:
                info = version() if callable(version) else None
            except Exception:  # not started yet
                return {}
            if info is None:
                return {}
            return {
                "script": {
                    "script": str(getattr(info, "script", "")),
                    "hash": str(getattr(info, "hash", "")),
                    "loaded_at": float(getattr(info, "loaded_at", 0.0)),
                }
            }

        self._responder = InstanceResponder(
            bus=runtime.get("bus", BusModule).bus,
            kv=runtime.get("kv", KvModule).store,
            instance_id=config.instance_id,
            services=runtime.local_targets(),
            version=__version__,
            started_at=runtime.started_at,
            registry=runtime.metrics,
            health=health,
            set_log_level=set_log_level,
            clock=runtime.clock,
            grpc_address=advertised_grpc_address(config.grpc, config.grpc_advertise),
            details=details,
        )
        await self._responder.start()

    @property
    def responder(self) -> InstanceResponder:
        if self._responder is None:
            raise RuntimeError("cluster module not started")
        return self._responder

    async def stop(self, grace: float) -> None:
        if self._responder is not None:
            await self._responder.stop()

    def ready(self) -> bool:
        return self._responder is not None
