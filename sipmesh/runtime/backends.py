"""The shared-state modules: ``kv``, ``location``, ``db`` and ``bus``.

Each opens its backend from the configured URL (memory/SQLite embedded, or Redis,
PostgreSQL and NATS when scaled), reports the connection's health to /ready, and
closes it last, after the services that use it have stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipmesh.runtime.context import Runtime

if TYPE_CHECKING:
    from sipmesh.state.bus import EventBus
    from sipmesh.state.db import Database
    from sipmesh.state.kv import KVStore
    from sipmesh.state.location import LocationStore

# Every key and subject sipmesh writes lives under this prefix, so a Redis or NATS
# server shared with other applications keeps them apart.
KEY_PREFIX = "sipmesh:"
SUBJECT_PREFIX = "sipmesh"


class KvModule:
    def __init__(self, runtime: Runtime) -> None:
        self._url = runtime.config.state
        self._store: KVStore | None = None

    @property
    def store(self) -> KVStore:
        if self._store is None:
            raise RuntimeError("kv module not started")
        return self._store

    async def start(self) -> None:
        from sipmesh.state.factory import open_kv

        self._store = open_kv(self._url, prefix=KEY_PREFIX)
        await self._store.ping()

    async def stop(self, grace: float) -> None:
        if self._store is not None:
            await self._store.close()

    def ready(self) -> bool:
        return self._store is not None and self._store.healthy


class LocationModule:
    def __init__(self, runtime: Runtime) -> None:
        self._url = runtime.config.state
        self._store: LocationStore | None = None

    @property
    def store(self) -> LocationStore:
        if self._store is None:
            raise RuntimeError("location module not started")
        return self._store

    async def start(self) -> None:
        from sipmesh.state.factory import open_location

        self._store = open_location(self._url, prefix=KEY_PREFIX)
        await self._store.ping()

    async def stop(self, grace: float) -> None:
        if self._store is not None:
            await self._store.close()

    def ready(self) -> bool:
        return self._store is not None and self._store.healthy


class DbModule:
    def __init__(self, runtime: Runtime) -> None:
        self._url = runtime.config.db
        self._db: Database | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("db module not started")
        return self._db

    async def start(self) -> None:
        from sipmesh.state.factory import open_db
        from sipmesh.state.schema import migrate

        self._db = await open_db(self._url)
        # The embedded default must work with no separate `sipmesh db init`; on a
        # shared PostgreSQL, migrate is idempotent and cheap when up to date.
        await migrate(self._db)

    async def stop(self, grace: float) -> None:
        if self._db is not None:
            await self._db.close()

    def ready(self) -> bool:
        return self._db is not None and self._db.healthy


class BusModule:
    def __init__(self, runtime: Runtime) -> None:
        self._url = runtime.config.bus
        self._bus: EventBus | None = None

    @property
    def bus(self) -> EventBus:
        if self._bus is None:
            raise RuntimeError("bus module not started")
        return self._bus

    async def start(self) -> None:
        from sipmesh.state.factory import open_bus

        self._bus = await open_bus(self._url, prefix=SUBJECT_PREFIX)

    async def stop(self, grace: float) -> None:
        if self._bus is not None:
            await self._bus.close()

    def ready(self) -> bool:
        return self._bus is not None and self._bus.healthy
