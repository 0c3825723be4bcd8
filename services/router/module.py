"""``sipmesh serve --target router``: build the RouterService from the runtime.

The router depends on kv (cfg values), db (routing tables) and bus (reload and cfg
broadcasts); it uses the registrar and presence through their client interfaces:
the local service object when that target runs in this process, else the gRPC
client for ``endpoints.<service>`` (``sipmesh.runtime.wiring`` once the runtime
owner provides it; until then the same choice is made here).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from sipmesh.clients.grpc_servers import add_router_servicer
from sipmesh.clients.interfaces import PresenceClient, RegistrarClient
from sipmesh.observe.spans import Spans
from sipmesh.regions.module import RegionsModule
from sipmesh.router.cfgstore import CfgStore, router_cfg_vars
from sipmesh.router.datasets import Loaders, RoutingDatasets
from sipmesh.router.dispatcher import Dispatcher
from sipmesh.router.dns import DnsResolver, settings_from_config
from sipmesh.router.dsprobe import (
    EdgeProbeSender,
    Prober,
    ProbeSender,
    ProbeSettings,
    UdpProbeSender,
    parse_reply_codes,
)
from sipmesh.router.env import RouterEnv
from sipmesh.router.service import Resource, RouterService
from sipmesh.router.tables import RoutingTables, load_tables
from sipmesh.router.targets import Myself
from sipmesh.runtime.backends import BusModule, DbModule, KvModule
from sipmesh.runtime.config import SipmeshConfig, split_hostport
from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.router")


def base_myself(config: SipmeshConfig) -> Myself:
    """Config domains, router.aliases, the listeners' and advertised addresses."""
    names: list[str] = [*config.domains, *config.router.aliases]
    ports: set[int] = set()
    for listen in config.listen:
        _proto, rest = listen.split(":", 1)
        host, port = split_hostport(rest)
        ports.add(port)
        if host not in ("0.0.0.0", "::"):
            names.append(host)
    advertise = config.edge.advertise
    if advertise:
        names.append(advertise.rsplit(":", 1)[0] if advertise.count(":") == 1 else advertise)
    return Myself(names, ports)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        return None


def _client(runtime: Runtime, target: str, kind: type[Any], grpc_name: str, endpoint: str) -> Any:
    wiring = _optional("sipmesh.runtime.wiring")
    factory = getattr(wiring, f"{target.replace('-', '_')}_client", None) if wiring else None
    if factory is not None:
        return factory(runtime)
    if runtime.has(target):
        return runtime.get(target, kind)
    if endpoint:
        from sipmesh.clients import grpc_clients

        return getattr(grpc_clients, grpc_name)(endpoint)
    return None


def create(runtime: Runtime) -> RouterService:
    config = runtime.config
    settings = config.router
    kv = runtime.get("kv", KvModule).store
    db = runtime.get("db", DbModule).db
    bus = runtime.get("bus", BusModule).bus
    registrar = _client(
        runtime, "registrar", RegistrarClient, "GrpcRegistrarClient", config.endpoints.registrar
    )
    presence = None
    if settings.features.presence:
        presence = _client(
            runtime, "presence", PresenceClient, "GrpcPresenceClient", config.endpoints.presence
        )
    cfg = CfgStore(
        kv,
        router_cfg_vars(
            {
                "pstn.gw_ip": settings.pstn_gw_ip,
                "pstn.gw_port": settings.pstn_gw_port,
                "voicemail.srv_ip": settings.voicemail_srv_ip,
                "voicemail.srv_port": settings.voicemail_srv_port,
            }
        ),
    )
    myself = base_myself(config)
    env = RouterEnv(
        settings=settings,
        cfg=cfg,
        myself=myself,
        registrar=registrar,
        presence=presence,
        # RFC 3263 resolution of foreign domains (SIPOUT): NAPTR/SRV/A/AAAA, cached.
        resolver=DnsResolver(settings_from_config(config), registry=runtime.metrics),
        call_timeout=max(0.1, settings.script_timeout * 0.8),
        dispatcher=Dispatcher(
            kv,
            bus,
            instance_id=config.instance_id,
            state_refresh=settings.ds_state_refresh,
            call_lifetime=settings.ds_call_lifetime,
        ),
    )

    # Multi-region (issue 12): a local lookup miss falls back to the remote index.
    env.regions = runtime.get("regions", RegionsModule).index
    env.region = config.regions.name

    async def tables() -> RoutingTables:
        return await load_tables(db)

    # Clients this module made itself (gRPC, split mode) start and stop with it.
    owned: list[Resource] = [
        c
        for c in (registrar, presence)
        if c is not None and not runtime.has(_target_of(c)) and hasattr(c, "start")
    ]
    service = RouterService(
        env,
        base_myself=myself,
        tables_loader=tables,
        bus=bus,
        instance_id=config.instance_id,
        metrics=runtime.metrics,
        clock=runtime.clock,
        resources=owned,
        datasets=RoutingDatasets(env, Loaders.from_db(db), _prober(runtime, env, kv)),
    )
    service.spans = Spans.from_runtime(runtime)
    _register_grpc(runtime, service)
    return service


def _prober(runtime: Runtime, env: RouterEnv, kv: Any) -> Prober | None:
    """The dispatcher's OPTIONS prober (one active instance at a time, KV lease)."""
    s = runtime.config.router
    if s.ds_ping_interval <= 0:
        return None
    sender: ProbeSender
    if s.ds_ping_via_edge and runtime.clients.is_available("edge"):
        sender = EdgeProbeSender(runtime.clients.edge)
    else:
        sender = UdpProbeSender(("0.0.0.0", 0))
    settings = ProbeSettings(
        interval=s.ds_ping_interval,
        timeout=s.ds_ping_timeout,
        probing_threshold=s.ds_probing_threshold,
        inactive_threshold=s.ds_inactive_threshold,
        reply_codes=parse_reply_codes(s.ds_ping_reply_codes),
        mode=s.ds_probing_mode,
        from_uri=s.ds_ping_from,
    )
    return Prober(env.dispatcher, sender, settings, kv=kv, instance_id=runtime.config.instance_id)


def _target_of(client: object) -> str:
    name = type(client).__name__
    return "registrar" if "Registrar" in name else "presence" if "Presence" in name else ""


def _register_grpc(runtime: Runtime, service: RouterService) -> None:
    """Expose the service as the Router gRPC servicer (adapter of sipmesh/clients)."""
    runtime.grpc_registrations.append(lambda server: add_router_servicer(server, service))
