"""Live state: location, bans, runtime values, statistics, reloads, instances.

Location goes through the registrar (it owns usrloc: the live store and the
``location`` table in line). Bans are the shared ``ipban`` list in the key/value
store. Runtime values are the router's cfg values in the key/value store, followed
by the ``router.cfg`` broadcast every router instance re-reads on
(services/router/cfgstore.py). Statistics, instance info and log levels are asked
of every process over the bus (sipmesh/runtime/cluster.py); reloads are the
``reload.<what>`` ReloadEvent requests the routers answer on the same subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from sipmesh import __version__
from sipmesh.admin import validate as v
from sipmesh.admin.base import AdminBase, audited
from sipmesh.bans import BanList
from sipmesh.clients.errors import InvalidArgument, NotFound
from sipmesh.gen.sipmesh.v1 import admin_pb2, common_pb2, events_pb2, registrar_pb2
from sipmesh.observe.capture import CAPTURE_MODE_KEY, set_capture_mode
from sipmesh.state.bus import Message

CFG_KEY = "cfg:router:"
CFG_SUBJECT = "router.cfg"
RELOADABLE = ("script", "dispatcher", "lcr", "dialplan", "all")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# siptrace.mode: the cluster-wide SIP capture switch (kamcmd siptrace.status on|off),
# kept under its own key of the shared store, which every edge polls
# (sipmesh/observe/capture.py); Kamailio's "on" is sipmesh's "all".
CAPTURE_CFG = "siptrace.mode"
CAPTURE_MODES = {"on": "all", "all": "all", "off": "off", "flagged": "flagged"}


class LiveOps(AdminBase):
    # -- location ------------------------------------------------------------------------

    async def location_show(
        self, request: admin_pb2.LocationShowRequest, *, timeout: float | None = None
    ) -> admin_pb2.LocationShowReply:
        v.text(request.aor, "aor", 255)
        v.page(request.page_token, request.limit)
        reply = await self.need_registrar().show_location(
            registrar_pb2.ShowLocationRequest(
                aor=request.aor, limit=request.limit, page_token=request.page_token
            ),
            timeout=timeout,
        )
        return admin_pb2.LocationShowReply(
            bindings=reply.bindings, next_page_token=reply.next_page_token
        )

    @audited("ul.rm")
    async def location_remove(
        self, request: admin_pb2.LocationRemoveRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        v.text(request.aor, "aor", 255, required=True)
        v.text(request.contact, "contact", 512)
        reply = await self.need_registrar().remove_location(
            registrar_pb2.RemoveLocationRequest(aor=request.aor, contact=request.contact),
            timeout=timeout,
        )
        if not reply.removed:
            raise NotFound(f"{request.aor}: no such binding")
        return admin_pb2.WriteReply(affected=reply.removed, message="removed")

    @audited("ul.add")
    async def location_add(
        self, request: admin_pb2.LocationAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        aor = v.text(request.aor, "aor", 255, required=True)
        if any(c.isspace() for c in aor) or aor.startswith("@") or aor.endswith("@"):
            raise InvalidArgument(f"aor: {aor!r} is not user@domain")
        contact = v.sip_uri(request.contact, "contact", 512)
        v.number(request.flags, "flags", v.UINT_INTEGER)
        binding = common_pb2.Binding(
            aor=aor,
            contact=contact,
            expires_at=self.clock() + request.expires if request.expires else 0.0,
            path=[v.text(p, "path", 512) for p in request.path],
            flags=request.flags,
        )
        if request.HasField("q"):
            if not (0.0 <= request.q <= 1.0):
                raise InvalidArgument("q: between 0 and 1 (RFC 3261 §20.10)")
            binding.q = request.q
        await self.need_registrar().add_location(
            registrar_pb2.AddLocationRequest(binding=binding), timeout=timeout
        )
        return admin_pb2.WriteReply(affected=1, message="added")

    # -- bans ----------------------------------------------------------------------------

    async def ban_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.BanListReply:
        now = self.clock()
        bans = await BanList(self.need_kv()).list()
        return admin_pb2.BanListReply(
            bans=[
                admin_pb2.Ban(
                    ip=b.source,
                    reason=b.reason,
                    expires_at=0.0 if math.isinf(b.remaining) else now + b.remaining,
                    duration=0 if math.isinf(b.remaining) else int(b.remaining),
                )
                for b in bans
                if not request.filter or b.source.startswith(request.filter)
            ]
        )

    async def _ban_event(self, kind: int, ip: str, expires_at: float, reason: str) -> None:
        if self.bus is None:
            return
        env = events_pb2.Envelope(
            id=f"ban:{ip}:{time.time_ns()}",
            time=self.clock(),
            instance=self.instance_id,
            service="admin",
            ban=events_pb2.BanEvent(kind=kind, ip=ip, expires_at=expires_at, reason=reason),  # type: ignore[arg-type]
        )
        # events.proto's subjects, the ones every edge listens on (edge/banevents.py).
        subject = (
            "sipmesh.ban.added" if kind == events_pb2.BanEvent.KIND_ADDED else "sipmesh.ban.removed"
        )
        await self.bus.publish(subject, env.SerializeToString())

    @audited("ban.add")
    async def ban_add(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        ip = v.ip_address(request.ip, "ip")
        reason = v.text(request.reason, "reason", 128) or "admin"
        seconds = float(request.duration or self.config.edge.ban_time)
        await BanList(self.need_kv()).ban(ip, seconds, reason)
        await self._ban_event(events_pb2.BanEvent.KIND_ADDED, ip, self.clock() + seconds, reason)
        return admin_pb2.WriteReply(affected=1, message=f"banned for {int(seconds)}s")

    @audited("ban.rm")
    async def ban_remove(
        self, request: admin_pb2.Ban, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        ip = v.ip_address(request.ip, "ip")
        if not await BanList(self.need_kv()).lift(ip):
            raise NotFound(f"{ip} is not banned")
        await self._ban_event(events_pb2.BanEvent.KIND_REMOVED, ip, 0.0, "admin")
        return admin_pb2.WriteReply(affected=1, message="lifted")

    # -- cfg -----------------------------------------------------------------------------

    def _cfg_defaults(self) -> dict[str, str]:
        """The router's declared values (services/router/cfgstore.py router_cfg_vars)."""
        r = self.config.router
        return {
            "pstn.gw_ip": r.pstn_gw_ip,
            "pstn.gw_port": r.pstn_gw_port,
            "voicemail.srv_ip": r.voicemail_srv_ip,
            "voicemail.srv_port": r.voicemail_srv_port,
            "voicemail.prefix": "",
            CAPTURE_CFG: self.config.telemetry.capture_mode,
        }

    @staticmethod
    def _cfg_store_key(key: str) -> str:
        return CAPTURE_MODE_KEY if key == CAPTURE_CFG else CFG_KEY + key

    async def cfg_get(
        self, request: admin_pb2.CfgGetRequest, *, timeout: float | None = None
    ) -> admin_pb2.CfgValues:
        v.text(request.group, "group", 64)
        v.text(request.name, "name", 64)
        defaults = self._cfg_defaults()
        keys = [
            k
            for k in defaults
            if (not request.group or k.split(".")[0] == request.group)
            and (not request.name or k.split(".", 1)[1] == request.name)
        ]
        if not keys:
            raise NotFound(f"no cfg value {request.group or '*'}.{request.name or '*'}")
        stored = await self.need_kv().get_many([self._cfg_store_key(k) for k in keys])
        values = []
        for key, raw in zip(keys, stored, strict=True):
            group, name = key.split(".", 1)
            values.append(
                admin_pb2.CfgValue(
                    group=group, name=name, text=raw.decode() if raw is not None else defaults[key]
                )
            )
        return admin_pb2.CfgValues(values=values)

    @audited("cfg.set")
    async def cfg_set(
        self, request: admin_pb2.CfgValue, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        which = request.WhichOneof("value")
        value = request.text if which == "text" else str(request.number) if which else ""
        v.text(value, "value", 255)
        if request.group == "core" and request.name in ("debug", "log_level"):
            return await self._log_level(value, timeout)
        key = f"{request.group}.{request.name}"
        if key == CAPTURE_CFG:
            return await self._capture_mode(value)
        if key not in self._cfg_defaults():
            raise NotFound(f"no cfg value {key}")
        await self.need_kv().set(CFG_KEY + key, value.encode())
        await self.need_bus().publish(CFG_SUBJECT, key.encode())
        return admin_pb2.WriteReply(affected=1, message=f"{key} = {value}")

    async def _capture_mode(self, value: str) -> admin_pb2.WriteReply:
        """``cfg set siptrace mode on|off|flagged``: every edge within seconds."""
        mode = CAPTURE_MODES.get(value.strip().lower())
        if mode is None:
            raise InvalidArgument(f"value: a capture mode ({', '.join(CAPTURE_MODES)})")
        await set_capture_mode(self.need_kv(), mode)
        return admin_pb2.WriteReply(affected=1, message=f"{CAPTURE_CFG} = {mode}")

    async def _log_level(self, level: str, timeout: float | None) -> admin_pb2.WriteReply:
        """``cfg set core debug LEVEL``: Kamailio's debug level, on every process."""
        level = level.upper()
        if level not in LOG_LEVELS:
            raise InvalidArgument(f"value: a log level ({', '.join(LOG_LEVELS)})")
        got = await self.need_cluster().gather(
            "log_level", {"level": level}, timeout=self.wait(timeout)
        )
        return admin_pb2.WriteReply(
            affected=len(got.answers),
            message=f"log level {level}",
            missing_instances=got.missing,
        )

    # -- statistics ----------------------------------------------------------------------

    async def stats(
        self, request: admin_pb2.StatsRequest, *, timeout: float | None = None
    ) -> admin_pb2.StatsReply:
        if request.reset:
            raise InvalidArgument("reset: Prometheus counters are not reset (use rate())")
        v.text(request.group, "group", 64)
        for n in request.names:
            v.text(n, "names", 128)
        got = await self.need_cluster().gather(
            "stats",
            {"group": request.group, "names": list(request.names)},
            timeout=self.wait(timeout),
        )
        totals: dict[str, float] = {}
        instances = []
        for instance in sorted(got.answers):
            values = {
                str(k): float(x) for k, x in (got.answers[instance].get("values") or {}).items()
            }
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value
            instances.append(
                admin_pb2.InstanceStats(
                    instance=instance,
                    service=",".join(got.services.get(instance, [])),
                    values=values,
                )
            )
        return admin_pb2.StatsReply(
            instances=instances, totals=totals, missing_instances=got.missing
        )

    # -- reload, versions, instances, ping ---------------------------------------------------

    async def _router_instances(self) -> set[str]:
        announced = await self.need_cluster().announced()
        return {i for i, info in announced.items() if "router" in (info.get("services") or ())}

    async def reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        what = request.what or "all"
        if what not in RELOADABLE:
            raise InvalidArgument(f"what: one of {', '.join(RELOADABLE)}")
        if request.script:
            raise InvalidArgument(
                "script: the script path is router.script in the configuration; "
                "reload re-reads it on every router instance"
            )
        await self.audit("reload", request, ok=True)
        bus = self.need_bus()
        expected = await self._router_instances()
        # The router listens on reload.<what> (script, all, and per table: dispatcher,
        # lcr, dialplan reload only that table) and answers on the same subject.
        subject = f"reload.{what}"
        results: dict[str, admin_pb2.InstanceResult] = {}
        done = asyncio.Event()

        async def on_answer(message: Message) -> None:
            env = events_pb2.Envelope()
            with contextlib.suppress(Exception):
                env.ParseFromString(message.data)
            if env.WhichOneof("event") != "reload" or env.reload.request:
                return
            results[env.instance] = admin_pb2.InstanceResult(
                instance=env.instance,
                ok=env.reload.ok,
                error=env.reload.error,
                version=env.reload.version,
            )
            if expected and expected <= set(results):
                done.set()

        sub = await bus.subscribe(subject, on_answer)
        try:
            request_env = events_pb2.Envelope(
                id=f"{self.instance_id}-reload-{time.time_ns()}",
                time=self.clock(),
                instance=self.instance_id,
                service="admin",
                reload=events_pb2.ReloadEvent(what=what, request=True),
            )
            await bus.publish(subject, request_env.SerializeToString())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.wait(timeout))
        finally:
            await sub.stop()
        return admin_pb2.ReloadReply(
            results=[results[i] for i in sorted(results)],
            missing_instances=sorted(expected - set(results)),
        )

    async def _table_reload(
        self, request: admin_pb2.ReloadRequest, table: str, timeout: float | None
    ) -> admin_pb2.ReloadReply:
        return await self.reload(admin_pb2.ReloadRequest(what=table), timeout=timeout)

    async def dispatcher_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._table_reload(request, "dispatcher", timeout)

    async def lcr_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._table_reload(request, "lcr", timeout)

    async def dialplan_reload(
        self, request: admin_pb2.ReloadRequest, *, timeout: float | None = None
    ) -> admin_pb2.ReloadReply:
        return await self._table_reload(request, "dialplan", timeout)

    async def versions(
        self, request: admin_pb2.VersionsRequest, *, timeout: float | None = None
    ) -> admin_pb2.VersionsReply:
        expected = await self._router_instances()
        got = await self.need_cluster().gather(
            "info", timeout=self.wait(timeout), expected=expected
        )
        out = []
        for instance in sorted(got.answers):
            script = got.answers[instance].get("script")
            if isinstance(script, dict):
                out.append(
                    admin_pb2.ScriptVersion(
                        instance=instance,
                        script=str(script.get("script", "")),
                        hash=str(script.get("hash", "")),
                        loaded_at=float(script.get("loaded_at", 0.0)),
                    )
                )
        return admin_pb2.VersionsReply(versions=out, missing_instances=got.missing)

    async def instances(
        self, request: admin_pb2.InstancesRequest, *, timeout: float | None = None
    ) -> admin_pb2.InstancesReply:
        cluster = self.need_cluster()
        got = await cluster.gather("info", timeout=self.wait(timeout))
        announced = await cluster.announced()
        out = []
        for instance in sorted(set(got.answers) | set(got.missing)):
            info = got.answers.get(instance) or announced.get(instance) or {}
            health = {str(k): str(x) for k, x in (info.get("health") or {}).items()}
            if instance in got.missing:
                health = {"instance": "not answering"}
            out.append(
                admin_pb2.Instance(
                    id=instance,
                    services=[str(s) for s in info.get("services") or ()],
                    host=str(info.get("host", "")),
                    version=str(info.get("version", "")),
                    health=health,
                    started_at=float(info.get("started_at", 0.0)),
                    grpc_address=str(info.get("grpc_address", "")),
                )
            )
        return admin_pb2.InstancesReply(instances=out)

    async def ping(
        self, request: admin_pb2.PingAdminRequest, *, timeout: float | None = None
    ) -> admin_pb2.PongAdminReply:
        return admin_pb2.PongAdminReply(
            instance=self.instance_id, version=__version__, time=self.clock()
        )
