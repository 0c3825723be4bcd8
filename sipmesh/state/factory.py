"""Open state backends from the URLs of the configuration (DESIGN.md: --state, --db, --bus).

- key/value and location: ``memory`` or ``redis://[:password@]host:port/db`` (``rediss://``)
- tables: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
  ``sqlite://:memory:`` or ``postgresql://user@host:port/database``
- bus: ``memory`` or ``nats://host:port`` (several comma-separated servers allowed)

Implementation modules are imported lazily so the embedded default never loads a
driver it does not use.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sipmesh.state.bus import EventBus
from sipmesh.state.clock import Clock, system_clock
from sipmesh.state.db import Database
from sipmesh.state.errors import BadStateURL
from sipmesh.state.kv import KVStore
from sipmesh.state.location import LocationStore


def _scheme(url: str) -> str:
    if url.strip() == "memory":
        return "memory"
    scheme = urlsplit(url).scheme.lower()
    if not scheme:
        raise BadStateURL(f"not a state URL: {url!r}")
    return scheme


def check_url(url: str, kind: str) -> None:
    """Raise BadStateURL when ``url`` cannot serve ``kind`` (state, db or bus)."""
    allowed = {
        "state": {"memory", "redis", "rediss", "unix"},
        "db": {"sqlite", "postgresql", "postgres"},
        "bus": {"memory", "nats", "tls"},
    }[kind]
    scheme = _scheme(url)
    if scheme not in allowed:
        raise BadStateURL(f"{kind} URL {url!r}: scheme {scheme!r} not one of {sorted(allowed)}")


def open_kv(
    url: str, *, prefix: str = "", clock: Clock = system_clock, op_timeout: float = 2.0
) -> KVStore:
    """A KVStore for ``url`` (no I/O yet: Redis connects on first use)."""
    check_url(url, "state")
    if _scheme(url) == "memory":
        from sipmesh.state.kv_memory import MemoryKV

        return MemoryKV(prefix=prefix, clock=clock)
    from sipmesh.state.kv_redis import RedisKV
    from sipmesh.state.redis_common import make_redis_client

    return RedisKV(
        make_redis_client(url, op_timeout=op_timeout), prefix=prefix, op_timeout=op_timeout
    )


def open_location(
    url: str, *, prefix: str = "", clock: Clock = system_clock, op_timeout: float = 2.0
) -> LocationStore:
    """A LocationStore for ``url`` (no I/O yet: Redis connects on first use)."""
    check_url(url, "state")
    if _scheme(url) == "memory":
        from sipmesh.state.location_memory import MemoryLocationStore

        return MemoryLocationStore(prefix=prefix, clock=clock)
    from sipmesh.state.location_redis import RedisLocationStore
    from sipmesh.state.redis_common import make_redis_client

    client = make_redis_client(url, op_timeout=op_timeout)
    return RedisLocationStore(client, prefix=prefix, clock=clock, op_timeout=op_timeout)


async def open_db(url: str, *, op_timeout: float = 5.0) -> Database:
    """Connect to the database of ``url``; raises StateUnavailable when it is down."""
    check_url(url, "db")
    if _scheme(url) == "sqlite":
        from sipmesh.state.db_sqlite import SQLiteDatabase, sqlite_path

        return await SQLiteDatabase.open(sqlite_path(url), op_timeout=op_timeout)
    from sipmesh.state.db_postgres import PostgresDatabase

    return await PostgresDatabase.open(url, op_timeout=op_timeout)


async def open_bus(
    url: str,
    *,
    prefix: str = "",
    op_timeout: float = 2.0,
    stream_max_age: float | None = None,
    stream_max_msgs: int = 100_000,
) -> EventBus:
    """Connect the event bus of ``url``; raises StateUnavailable when NATS is down.

    Streams keep events for consumers that are down: on NATS for ``stream_max_age``
    seconds (None: JetStream's default, no limit), in process at most
    ``stream_max_msgs`` per stream.
    """
    check_url(url, "bus")
    if _scheme(url) == "memory":
        from sipmesh.state.bus_memory import MemoryBus

        return MemoryBus(prefix=prefix, max_msgs=stream_max_msgs)
    from sipmesh.state.bus_nats import NatsBus

    return await NatsBus.connect(
        url, prefix=prefix, op_timeout=op_timeout, stream_max_age=stream_max_age
    )
