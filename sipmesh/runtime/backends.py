"""The shared-state modules: ``kv``, ``location``, ``db`` and ``bus``.

Each opens its backend from the configured URL (memory/SQLite embedded, or Redis,
PostgreSQL and NATS when scaled), reports the connection's health to /ready, and
closes it last, after the services that use it have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from sipmesh.runtime.context import Runtime

if TYPE_CHECKING:
    from sipmesh.runtime.config import SipmeshConfig
    from sipmesh.state.bus import EventBus
    from sipmesh.state.db import Database
    from sipmesh.state.kv import KVStore
    from sipmesh.state.location import LocationStore

log = logging.getLogger("sipmesh.backends")


class _Backend(Protocol):
    @property
    def healthy(self) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


B = TypeVar("B", bound=_Backend)

# How often an idle backend connection is checked, so /ready notices a lost server
# even when no traffic touches it.
PING_INTERVAL = 2.0


class _HealthWatch:
    """Pings a backend periodically; `ok` is the outcome of the last ping."""

    def __init__(self, name: str, ping: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._ping = ping
        self.ok = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            try:
                await self._ping()
            except Exception as exc:
                if self.ok:
                    log.warning("%s backend unreachable: %s", self._name, exc)
                self.ok = False
            else:
                if not self.ok:
                    log.info("%s backend reachable again", self._name)
                self.ok = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# Every key and subject sipmesh writes lives under this prefix, so a Redis or NATS
# server shared with other applications keeps them apart. These are the defaults;
# the configured ``namespace`` (regions, several installations on one server)
# replaces "sipmesh" (key_prefix / subject_prefix below).
KEY_PREFIX = "sipmesh:"


def key_prefix(config: SipmeshConfig) -> str:
    """The Redis key prefix of this installation (``<namespace>:``)."""
    return config.namespace + ":"


def subject_prefix(config: SipmeshConfig) -> str:
    """The NATS subject prefix of this installation.

    The subjects of events.proto already start with ``sipmesh.``, so the default
    namespace adds nothing (no ``sipmesh.sipmesh.…``); another namespace is put in
    front (``region-a.sipmesh.registration.added``).
    """
    return "" if config.namespace == "sipmesh" else config.namespace


class _BackendModule(Generic[B]):
    """Opens one backend at start, watches its health, closes it at stop."""

    name = "backend"

    def __init__(self, runtime: Runtime) -> None:
        self._config = runtime.config
        self._backend: B | None = None
        self._watch: _HealthWatch | None = None

    async def _open(self) -> B:
        raise NotImplementedError

    @property
    def backend(self) -> B:
        if self._backend is None:
            raise RuntimeError(f"{self.name} module not started")
        return self._backend

    async def start(self) -> None:
        self._backend = await self._open()
        self._watch = _HealthWatch(self.name, self._backend.ping)
        self._watch.start()

    async def stop(self, grace: float) -> None:
        if self._watch is not None:
            await self._watch.stop()
        if self._backend is not None:
            await self._backend.close()

    def ready(self) -> bool:
        watch_ok = self._watch is None or self._watch.ok
        return self._backend is not None and self._backend.healthy and watch_ok


class KvModule(_BackendModule["KVStore"]):
    """Key/value store: bans, nonces, flood counters, dialogs, runtime values."""

    name = "kv"

    async def _open(self) -> KVStore:
        from sipmesh.state.factory import open_kv

        store = open_kv(self._config.state, prefix=key_prefix(self._config))
        await store.ping()
        return store

    @property
    def store(self) -> KVStore:
        return self.backend


class LocationModule(_BackendModule["LocationStore"]):
    """Location service (usrloc): AOR → contacts."""

    name = "location"

    async def _open(self) -> LocationStore:
        from sipmesh.state.factory import open_location

        store = open_location(self._config.state, prefix=key_prefix(self._config))
        await store.ping()
        return store

    @property
    def store(self) -> LocationStore:
        return self.backend


class DbModule(_BackendModule["Database"]):
    """Tables in Kamailio's schema (SQLite embedded, PostgreSQL shared)."""

    name = "db"

    async def _open(self) -> Database:
        from sipmesh.state.factory import open_db
        from sipmesh.state.schema import migrate

        db = await open_db(self._config.db)
        # The embedded default must work with no separate `sipmesh db init`; on a
        # shared PostgreSQL, migrate is idempotent and cheap when up to date.
        await migrate(db)
        return db

    @property
    def db(self) -> Database:
        return self.backend


class BusModule(_BackendModule["EventBus"]):
    """Event bus (in-process, or NATS with JetStream)."""

    name = "bus"

    async def _open(self) -> EventBus:
        from sipmesh.state.factory import open_bus

        return await open_bus(
            self._config.bus,
            prefix=subject_prefix(self._config),
            stream_max_age=self._config.event_retention,
            stream_max_msgs=self._config.event_retention_messages,
        )

    @property
    def bus(self) -> EventBus:
        return self.backend
