"""Fixtures of the registrar suite: a registrar on a fake clock, memory or Redis store.

The location store is parametrised (memory and the real Redis); tables are a fresh
SQLite file (or the real PostgreSQL in the persistence tests); events go over the
in-process bus so tests can read what was published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.registrar.api import Registrar
from sipmesh.registrar.testing import DOMAIN, MakeService, Stores
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_db(f"sqlite:///{tmp_path / 'sipmesh.sqlite'}")
    await migrate(db)
    yield db
    await db.close()


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest, unique_prefix: str, clock: FakeClock
) -> AsyncIterator[Stores]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = Stores(request.param, unique_prefix + ":", clock, url)
    yield s
    await s.close()


@pytest.fixture
async def make_service(
    stores: Stores, sqlite_db: Database, clock: FakeClock
) -> AsyncIterator[MakeService]:
    made: list[Registrar] = []
    buses: list[EventBus] = []

    async def make(
        db: Database | None = None,
        bus: EventBus | None = None,
        domains: tuple[str, ...] = (DOMAIN,),
        **settings: Any,
    ) -> Registrar:
        settings.setdefault("db_mode", "none")
        if bus is None:
            bus = MemoryBus()
            buses.append(bus)
        service = Registrar(
            config=RegistrarConfig(**settings),
            domains=domains,
            instance_id=f"reg{len(made)}",
            store=stores.location(),
            kv=stores.kv(),
            db=db or sqlite_db,
            bus=bus,
            registry=CollectorRegistry(),
            clock=clock,
            run_timer=False,
        )
        await service.start()
        made.append(service)
        return service

    yield make
    for service in made:
        await service.stop(1.0)
    for bus in buses:
        await bus.close()
