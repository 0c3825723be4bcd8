"""RouterService: the RouterClient the edge calls, running the routing script.

One call = one ``RouteRequest`` → one ``Decision``. Nothing here does I/O per call
except what the script asks for (registrar, presence); tables and cfg values are
in memory (DESIGN.md, Performance). Failures of the script become a fallback
decision (500 for request/failure routes, "proceed" for replies, "drop" for a
branch), never an exception towards the edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from sipmesh.clients.errors import InvalidArgument
from sipmesh.gen.sipmesh.v1 import common_pb2, events_pb2, router_pb2
from sipmesh.observe.spans import Spans
from sipmesh.observe.stats import Children
from sipmesh.router.api import Ctx
from sipmesh.router.cfgstore import CfgStore
from sipmesh.router.datasets import KINDS as DATASET_KINDS
from sipmesh.router.datasets import RoutingDatasets
from sipmesh.router.env import RouterEnv
from sipmesh.router.reload import ReloadResult, ScriptVersions, VersionInfo
from sipmesh.router.runner import (
    DEFAULT_SCRIPT,
    ErrorLog,
    RouteFunction,
    load_script_checked,
    run_route,
)
from sipmesh.router.tables import RoutingTables
from sipmesh.router.targets import Myself
from sipmesh.router.txstate import TxState
from sipmesh.sip import ParseError, Request, Response, parse_message
from sipmesh.state.bus import EventBus, Message, Subscription

log = logging.getLogger("sipmesh.router")

TablesLoader = Callable[[], Coroutine[Any, Any, RoutingTables]]


class Resource(Protocol):
    """Something the router starts and closes with itself (its own gRPC clients)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


_DEFAULT_ROUTE = {
    router_pb2.ROUTE_KIND_BRANCH: "branch_route",
    router_pb2.ROUTE_KIND_REPLY: "reply_route",
    router_pb2.ROUTE_KIND_FAILURE: "failure_route",
}
# Bus subjects (without the bus prefix; see proto/sipmesh/v1/events.proto).
RELOAD_SUBJECTS = (
    "reload.script",
    "reload.all",
    "reload.dispatcher",
    "reload.lcr",
    "reload.dialplan",
)
CFG_SUBJECT = "router.cfg"


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "sipmesh_router_decisions",
            "routing decisions by route kind and action",
            ["kind", "action"],
            registry=registry,
        )
        self.errors = Counter(
            "sipmesh_router_script_errors",
            "routing script exceptions and time budget overruns",
            ["reason"],
            registry=registry,
        )
        # Counted per routing call: the children, looked up once.
        self.decision = Children(self.decisions)
        self.reloads = Counter(
            "sipmesh_router_reloads", "script reloads by result", ["result"], registry=registry
        )
        self.loaded_at = Gauge(
            "sipmesh_router_script_loaded_timestamp_seconds",
            "when the active routing script was loaded",
            registry=registry,
        )


class RouterService:
    """The router: implements sipmesh.clients.interfaces.RouterClient."""

    def __init__(
        self,
        env: RouterEnv,
        *,
        base_myself: Myself,
        tables_loader: TablesLoader | None = None,
        bus: EventBus | None = None,
        instance_id: str = "router",
        metrics: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        resources: Sequence[Resource] = (),
        datasets: RoutingDatasets | None = None,
    ) -> None:
        self._resources = list(resources)
        self.datasets = datasets
        self.env = env
        self._base_myself = base_myself
        self._tables_loader = tables_loader
        self._bus = bus
        self._instance = instance_id
        self._clock = clock
        self._metrics = _Metrics(metrics if metrics is not None else CollectorRegistry())
        self._errors = ErrorLog()
        self._versions: ScriptVersions | None = None
        self._subs: list[Subscription] = []
        self._refresher: asyncio.Task[None] | None = None
        self._running = False
        # Span helpers (sipmesh.observe); off unless the module factory sets them.
        self.spans = Spans.off()

    # -- lifecycle --------------------------------------------------------------------

    @property
    def cfg(self) -> CfgStore:
        return self.env.cfg

    async def start(self) -> None:
        """Load the configured script (a broken one fails the start), tables, cfg."""
        for resource in self._resources:
            await resource.start()
        spec = self.env.settings.script or DEFAULT_SCRIPT
        script = await load_script_checked(spec, self._load_timeout(), self._clock())
        self._versions = ScriptVersions(
            script, retention=self.env.settings.version_retention, clock=self._clock
        )
        self._metrics.loaded_at.set(script.loaded_at)
        await self.reload_tables()
        if self.datasets is not None:
            await self.datasets.start()
        await self.env.cfg.refresh()
        if self._bus is not None:
            for subject in RELOAD_SUBJECTS:
                self._subs.append(await self._bus.subscribe(subject, self._on_reload_event))
            self._subs.append(await self._bus.subscribe(CFG_SUBJECT, self._on_cfg_event))
        self._refresher = asyncio.create_task(self._refresh_loop(), name="router-cfg-refresh")
        self._running = True
        log.info("router: script %s (%s) active", script.path, script.hash[:12])

    async def stop(self, grace: float) -> None:
        self._running = False
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        pending = list(self.env.background)
        if pending:
            await asyncio.wait(pending, timeout=grace)
        if self.datasets is not None:
            await self.datasets.stop()
        for resource in self._resources:
            await resource.close()

    def ready(self) -> bool:
        return self._running and self._versions is not None

    def _load_timeout(self) -> float:
        return max(10.0, self.env.settings.script_timeout * 10)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.env.settings.cfg_refresh)
            try:
                await self.env.cfg.refresh()
            except Exception as exc:  # the store is down: keep the values we have
                log.debug("router: cfg refresh failed: %s", exc)
            if self._versions is not None:
                self._versions.prune()

    # -- the hot path -------------------------------------------------------------------

    async def route(
        self,
        request: router_pb2.RouteRequest,
        *,
        timeout: float | None = None,
    ) -> router_pb2.Decision:
        decision, _ = await self._traced(request, None, timeout)
        return decision

    async def route_parsed(
        self,
        request: router_pb2.RouteRequest,
        parsed: Request,
        *,
        timeout: float | None = None,
    ) -> tuple[router_pb2.Decision, Response | None]:
        """In one process (LocalRouter): route the request the edge already parsed.

        ``parsed`` is ``request.message.raw`` parsed; the script works on a copy, so
        no parse happens here. Also returns a raw reply built in this process (the
        registrar's response) as the object it was serialised from.
        """
        return await self._traced(request, parsed, timeout)

    async def _traced(
        self,
        request: router_pb2.RouteRequest,
        parsed: Request | None,
        timeout: float | None,
    ) -> tuple[router_pb2.Decision, Response | None]:
        spans = self.spans
        if not spans.enabled:
            return await self._route(request, parsed, timeout=timeout)
        # The decision span: a child of the edge's transaction span (trace context of
        # the stream item, or the caller's task context in one process).
        with spans.decision(request.kind, *_call_facts(request.message.raw)) as span:
            decision, reply = await self._route(request, parsed, timeout=timeout)
            if span is not None:
                span.set_attribute("sip.route.action", decision.WhichOneof("action") or "")
            if spans.sip_header and decision.WhichOneof("action") == "relay":
                # Towards another sipmesh region: carry this trace in a SIP header.
                decision.edits.append(
                    common_pb2.HeaderEdit(
                        op=common_pb2.HeaderEdit.OP_REPLACE,
                        name=spans.sip_header,
                        value=spans.traceparent(),
                    )
                )
            return decision, reply

    async def _route(
        self,
        request: router_pb2.RouteRequest,
        parsed: Request | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[router_pb2.Decision, Response | None]:
        versions = self._versions
        if versions is None:
            raise InvalidArgument("router not started")
        kind = request.kind or router_pb2.ROUTE_KIND_REQUEST
        state = TxState.decode(request.context)
        script = versions.get(state.version)
        msg: Request | Response
        if parsed is not None:
            msg = parsed.copy()  # the caller's parse of request.message.raw
        else:
            try:
                # The edge validated the request before routing it: split lazily.
                msg = parse_message(request.message.raw, lazy=True)
            except ParseError as exc:
                return self._unparsable(kind, exc), None
        if not isinstance(msg, Request):
            raise InvalidArgument("RouteRequest.message is not a SIP request")
        reply: Response | None = None
        if request.reply:
            try:
                parsed_reply = parse_message(request.reply, lazy=True)
                reply = parsed_reply if isinstance(parsed_reply, Response) else None
            except ParseError:
                reply = None
        fn: RouteFunction | None
        if kind == router_pb2.ROUTE_KIND_REQUEST:
            fn = script.request_route
        else:
            fn = script.handler(request.handler) or script.handler(_DEFAULT_ROUTE[kind])
            if fn is None:
                self._metrics.decision(_kind_name(kind), "proceed").inc()
                return router_pb2.Decision(
                    proceed=router_pb2.Proceed(), context=request.context
                ), None
        ctx = Ctx(self.env, request, msg, state, reply)
        budget = self.env.settings.script_timeout
        if timeout is not None:
            budget = min(budget, timeout)
        result = await run_route(fn, ctx, script, budget, self._errors)
        if not result.ok:
            self._metrics.errors.labels(result.error).inc()
            return self._fallback(kind, state, script.hash), None
        decision = ctx.build(script.hash)
        action = decision.WhichOneof("action") or ""
        self._metrics.decision(_kind_name(kind), action).inc()
        return decision, ctx.reply_message if action == "reply" else None

    def _fallback(self, kind: int, state: TxState, version: str) -> router_pb2.Decision:
        d = router_pb2.Decision(context=TxState(version=version, flags=state.flags).encode())
        if kind in (router_pb2.ROUTE_KIND_REQUEST, router_pb2.ROUTE_KIND_FAILURE):
            d.reply.CopyFrom(router_pb2.Reply(code=500, reason="Server Internal Error"))
            action = "reply"
        elif kind == router_pb2.ROUTE_KIND_BRANCH:
            d.drop.reason = "routing script error"
            action = "drop"
        else:
            d.proceed.SetInParent()
            action = "proceed"
        self._metrics.decision(_kind_name(kind), action).inc()
        return d

    def _unparsable(self, kind: int, exc: ParseError) -> router_pb2.Decision:
        if kind != router_pb2.ROUTE_KIND_REQUEST:
            return router_pb2.Decision(proceed=router_pb2.Proceed())
        code = getattr(exc, "status_hint", 400) or 400
        return router_pb2.Decision(
            reply=router_pb2.Reply(code=code, reason="Bad Request", stateless=True)
        )

    # -- reload, versions, tables ------------------------------------------------------------

    def version(self) -> VersionInfo:
        if self._versions is None:
            raise RuntimeError("router not started")
        return self._versions.info()

    async def reload_tables(self) -> None:
        """Load the routing tables; on error the old snapshot stays (and the error raises)."""
        if self._tables_loader is not None:
            tables = await self._tables_loader()
            self.set_tables(tables)

    def set_tables(self, tables: RoutingTables) -> None:
        myself = self._base_myself
        if self.env.features.multidomain and tables.domains:
            myself = myself.with_names(tables.domains)
        # Two attribute stores; a request reads both through the same env object, and a
        # table swap is atomic per attribute (no await between them).
        self.env.tables = tables
        self.env.myself = myself

    async def reload(self, script: str | None = None, what: str = "all") -> ReloadResult:
        """Reload ``what``: "script" (the script and the routing tables), "dispatcher",
        "lcr", "dialplan" (that table only) or "all" (everything).

        Each part is loaded completely before it replaces the running one; on an
        error the running part stays and the result says why.
        """
        if self._versions is None:
            raise RuntimeError("router not started")
        if what in DATASET_KINDS:
            result = ReloadResult(True, self._versions.info())
        else:
            result = await self._versions.reload(script, self._load_timeout())
            if result.ok:
                try:
                    await self.reload_tables()
                except Exception as exc:
                    result = ReloadResult(False, result.version, f"tables: {exc}", result.changed)
        if result.ok and self.datasets is not None and what != "script":
            try:
                await self.datasets.reload(what)
            except Exception as exc:
                result = ReloadResult(False, result.version, f"{what}: {exc}", result.changed)
        self._metrics.reloads.labels("ok" if result.ok else "error").inc()
        if result.ok:
            self._metrics.loaded_at.set(result.version.loaded_at)
            log.info("router: reload ok, version %s", result.version.hash[:12])
        else:
            log.error(
                "router: reload refused, keeping %s: %s", result.version.hash[:12], result.error
            )
        return result

    async def _on_reload_event(self, message: Message) -> None:
        env = events_pb2.Envelope()
        try:
            env.ParseFromString(message.data)
        except Exception:
            return
        if env.WhichOneof("event") != "reload" or not env.reload.request:
            return  # our own (or another instance's) outcome
        what = env.reload.what or message.subject.rsplit(".", 1)[-1]
        result = await self.reload(what=what)
        if self._bus is None:
            return
        out = events_pb2.Envelope(
            id=f"{self._instance}-{time.time_ns()}",
            time=self._clock(),
            instance=self._instance,
            service="router",
            reload=events_pb2.ReloadEvent(
                what=what,
                request=False,
                ok=result.ok,
                error=result.error,
                version=result.version.hash,
            ),
        )
        await self._bus.publish(message.subject, out.SerializeToString())

    async def dispatcher_set_state(self, setid: int, uri: str, state: str) -> None:
        """ds.set_state for every instance (``sipmesh ctl dispatcher set-state``);
        KeyError for an unknown destination, ValueError for an unknown state."""
        await self.env.dispatcher.set_state(setid, uri, state)

    async def _on_cfg_event(self, message: Message) -> None:
        await self.env.cfg.refresh()

    # -- cfg (the admin API calls these) -------------------------------------------------------

    def cfg_get(self, group: str = "", name: str = "") -> list[tuple[str, str, str]]:
        """(group, name, value) of the runtime values; CfgError for an unknown one."""
        return self.env.cfg.values(group, name)

    async def cfg_set(self, group: str, name: str, value: str) -> None:
        """Change a runtime value on every router instance (no restart)."""
        await self.env.cfg.set(group, name, value)
        if self._bus is not None:
            await self._bus.publish(CFG_SUBJECT, f"{group}.{name}".encode())


def _kind_name(kind: int) -> str:
    return {1: "request", 2: "branch", 3: "reply", 4: "failure"}.get(kind, "request")


def _call_facts(raw: bytes) -> tuple[str, str]:
    """(Call-ID, method) of a raw request for the span, without a full parse."""
    head = raw[: raw.find(b"\r\n\r\n") + 2 if b"\r\n\r\n" in raw else len(raw)]
    method = head.split(b" ", 1)[0].decode("ascii", "replace")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("utf-8", "replace"), method
    return "", method
