"""Fixtures for the router tests: a router over the memory KV store and SQLite tables,
with the real registrar service object in the same process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.registrar.api import Registrar
from sipmesh.registrar.testing import add_subscriber
from sipmesh.router.cfgstore import CfgStore, router_cfg_vars
from sipmesh.router.env import RouterEnv
from sipmesh.router.service import RouterService
from sipmesh.router.tables import RoutingTables, load_tables
from sipmesh.router.targets import Myself
from sipmesh.router.testing import DOMAIN
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.runtime.sections.router import RouterConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.schema import migrate


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(f"sqlite:///{tmp_path / 'router.sqlite'}")
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


PASSWORDS = {"alice": "alicepw", "bob": "bobpw"}


@pytest.fixture
async def registrar(db: Database) -> AsyncIterator[Registrar]:
    """The real registrar service (memory location/KV, the tests' SQLite tables)."""
    for user, password in PASSWORDS.items():
        await add_subscriber(db, user, DOMAIN, password)
    bus = MemoryBus()
    service = Registrar(
        config=RegistrarConfig(db_mode="none"),
        domains=(DOMAIN,),
        instance_id="reg-test",
        store=MemoryLocationStore(prefix="reg:", clock=time.time),
        kv=MemoryKV(prefix="reg:"),
        db=db,
        bus=bus,
        registry=CollectorRegistry(),
        clock=time.time,
        run_timer=False,
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(1.0)
        await bus.close()


RouterFactory = Callable[..., Any]


@pytest.fixture
async def make_router(db: Database, registrar: Registrar) -> AsyncIterator[RouterFactory]:
    """make_router(**router settings) -> a started RouterService (stopped at the end)."""
    started: list[RouterService] = []

    async def factory(
        kv: MemoryKV | None = None, bus: EventBus | None = None, **settings: Any
    ) -> RouterService:
        features = settings.pop("features", {})
        config = RouterConfig(**settings)
        for name, value in features.items():
            setattr(config.features, name, value)
        cfg = CfgStore(kv or MemoryKV(), router_cfg_vars({}))
        myself = Myself([DOMAIN, "198.51.100.1"], [5060])
        env = RouterEnv(settings=config, cfg=cfg, myself=myself, registrar=registrar)

        async def tables() -> RoutingTables:
            return await load_tables(db)

        service = RouterService(env, base_myself=myself, tables_loader=tables, bus=bus)
        await service.start()
        started.append(service)
        return service

    yield factory
    for service in started:
        await service.stop(0)
