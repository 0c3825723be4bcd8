"""Fixtures of the presence suite: the service on a fake clock, SQLite tables, the
in-process KV and bus, and the recording EdgeClient of sipmesh.presence.testing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipmesh.presence.service import PresenceService
from sipmesh.presence.testing import Harness, MakeHarness, RecordingEdge
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.kv import KVStore
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.schema import migrate


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_db(f"sqlite:///{tmp_path / 'presence.sqlite'}")
    await migrate(db)
    yield db
    await db.close()


@pytest.fixture
async def make(sqlite_db: Database, clock: FakeClock) -> AsyncIterator[MakeHarness]:
    made: list[PresenceService] = []
    shared_bus = MemoryBus()
    shared_kv = MemoryKV()

    async def factory(
        *,
        db: Database | None = None,
        kv: KVStore | None = None,
        bus: EventBus | None = None,
        edge: RecordingEdge | None = None,
        instance: str = "",
        **settings: Any,
    ) -> Harness:
        settings.setdefault("initial_notify_delay_ms", 0)
        edge = edge or RecordingEdge()
        service = PresenceService(
            config=PresenceConfig(**settings),
            instance_id=instance or f"pres{len(made)}",
            db=db or sqlite_db,
            kv=kv or shared_kv,
            bus=bus or shared_bus,
            edge=edge,
            clock=clock,
        )
        await service.start()
        made.append(service)
        return Harness(service, edge, clock)

    yield factory
    for service in made:
        await service.stop(1.0)
    await shared_bus.close()
