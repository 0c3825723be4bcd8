"""Helpers of the dispatcher / lcr / dialplan tests: a router over SQLite tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sipmesh.gen.sipmesh.v1 import router_pb2
from sipmesh.router.cfgstore import CfgStore, router_cfg_vars
from sipmesh.router.datasets import Loaders, RoutingDatasets
from sipmesh.router.dispatcher import Dispatcher
from sipmesh.router.dsprobe import Prober
from sipmesh.router.env import RouterEnv
from sipmesh.router.service import RouterService
from sipmesh.router.targets import Myself
from sipmesh.router.testing import DOMAIN, route_request, sip_request
from sipmesh.runtime.sections.router import RouterConfig
from sipmesh.sip import Request
from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database
from sipmesh.state.kv_memory import MemoryKV


def write_script(tmp_path: Path, source: str, name: str = "lbscript.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


async def start_router(
    db: Database,
    script: str,
    *,
    dispatcher: Dispatcher | None = None,
    prober: Prober | None = None,
    bus: EventBus | None = None,
    instance_id: str = "router-test",
    **settings: Any,
) -> RouterService:
    config = RouterConfig(script=script, **settings)
    config.features.auth = False
    env = RouterEnv(
        settings=config,
        cfg=CfgStore(MemoryKV(), router_cfg_vars({})),
        myself=Myself([DOMAIN, "198.51.100.1"], [5060]),
        dispatcher=dispatcher or Dispatcher(),
    )
    service = RouterService(
        env,
        base_myself=env.myself,
        bus=bus,
        instance_id=instance_id,
        datasets=RoutingDatasets(env, Loaders.from_db(db), prober),
    )
    await service.start()
    return service


async def decide(router: RouterService, msg: Request, **kwargs: Any) -> router_pb2.Decision:
    return await router.route(route_request(msg, **kwargs))


def invite(ruri: str, **kwargs: Any) -> Request:
    return sip_request("INVITE", ruri, **kwargs)


async def fail(
    router: RouterService,
    msg: Request,
    previous: router_pb2.Decision,
    statuses: list[int],
) -> router_pb2.Decision:
    """The failure route the edge calls after the branches ended with ``statuses``."""
    request = route_request(
        msg,
        kind=router_pb2.ROUTE_KIND_FAILURE,
        context=previous.context,
        handler=previous.relay.handlers.failure,
        reply_status=min(statuses),
    )
    request.branch_statuses.extend(statuses)
    return await router.route(request)
