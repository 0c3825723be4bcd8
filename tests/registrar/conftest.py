"""Fixtures of the registrar suite: a registrar on a fake clock, memory or Redis store.

The location store is parametrised (memory and the real Redis); tables are a fresh
SQLite file (or the real PostgreSQL in the persistence tests); events go over the
in-process bus so tests can read what was published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.registrar.service import RegistrarService
from sipmesh.registrar.subscribers import credential_columns
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.state.bus import EventBus, Message
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.kv_redis import RedisKV
from sipmesh.state.location import LocationStore
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.location_redis import RedisLocationStore
from sipmesh.state.redis_common import make_redis_client
from sipmesh.state.schema import migrate

DOMAIN = "example.com"

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


async def add_subscriber(db: Database, user: str, domain: str, password: str) -> None:
    cols = credential_columns(user, domain, password, store_password=False, sha256=False)
    await db.execute(
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
        "VALUES ($1, $2, $3, $4, $5)",
        user,
        domain,
        cols["password"],
        cols["ha1"],
        cols["ha1b"],
    )


class Stores:
    """Opens location/kv stores of one backend; a second call = another instance."""

    def __init__(self, kind: str, prefix: str, clock: FakeClock, redis_url: str | None) -> None:
        self.kind = kind
        self.prefix = prefix
        self.clock = clock
        self.redis_url = redis_url
        self._mem_loc: MemoryLocationStore | None = None
        self._mem_kv: MemoryKV | None = None
        self.opened: list[Any] = []

    def location(self) -> LocationStore:
        if self.kind == "memory":
            if self._mem_loc is None:
                self._mem_loc = MemoryLocationStore(prefix=self.prefix, clock=self.clock)
            return self._mem_loc
        assert self.redis_url is not None
        store = RedisLocationStore(
            make_redis_client(self.redis_url), prefix=self.prefix, clock=self.clock
        )
        self.opened.append(store)
        return store

    def kv(self) -> KVStore:
        if self.kind == "memory":
            if self._mem_kv is None:
                self._mem_kv = MemoryKV(prefix=self.prefix, clock=self.clock)
            return self._mem_kv
        assert self.redis_url is not None
        kv = RedisKV(make_redis_client(self.redis_url), prefix=self.prefix)
        self.opened.append(kv)
        return kv

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


@pytest.fixture(params=BACKENDS)
async def stores(
    request: pytest.FixtureRequest, unique_prefix: str, clock: FakeClock
) -> AsyncIterator[Stores]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = Stores(request.param, unique_prefix + ":", clock, url)
    yield s
    await s.close()


class Recorder:
    """Collects every registration event published on a bus."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def kinds(self) -> list[str]:
        return [m.subject.rsplit(".", 1)[1] for m in self.messages]


MakeService = Callable[..., Awaitable[RegistrarService]]


@pytest.fixture
async def make_service(
    stores: Stores, sqlite_db: Database, clock: FakeClock
) -> AsyncIterator[MakeService]:
    made: list[RegistrarService] = []
    buses: list[EventBus] = []

    async def make(
        db: Database | None = None,
        bus: EventBus | None = None,
        domains: tuple[str, ...] = (DOMAIN,),
        **settings: Any,
    ) -> RegistrarService:
        settings.setdefault("db_mode", "none")
        if bus is None:
            bus = MemoryBus()
            buses.append(bus)
        service = RegistrarService(
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
