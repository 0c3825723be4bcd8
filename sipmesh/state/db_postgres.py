"""PostgreSQL Database over an asyncpg pool.

The pool replaces connections the server closed (restart, failover) when they are
next acquired; acquiring retries with exponential backoff until the operation's
deadline, so a short outage delays calls and a long one raises StateUnavailable.
A statement that fails because its connection died mid-flight is not retried (it may
have been applied): it raises StateUnavailable and the caller decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from sipmesh.state.db import Dialect, Executor, Row
from sipmesh.state.errors import ConstraintViolation, StateUnavailable

T = TypeVar("T")

# Errors meaning "no usable server/connection" rather than "bad statement".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def _adapt(value: Any) -> Any:
    # Timestamp columns are "without time zone" and hold UTC (as Kamailio's do).
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1] if status else ""
    return int(last) if last.isdigit() else 0


class _PgExecutor:
    dialect: Dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._conn.execute(sql, *map(_adapt, args)))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, [tuple(map(_adapt, a)) for a in args])

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self._conn.fetch(sql, *map(_adapt, args))]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self._conn.fetchrow(sql, *map(_adapt, args))
        return None if row is None else dict(row)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *map(_adapt, args))


class _PgTx(_PgExecutor):
    """The executor of one transaction; errors mapped like the database's."""

    def __init__(self, conn: Any, db: PostgresDatabase) -> None:
        super().__init__(conn)
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._db._guard(super().execute(sql, *args))

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self._db._guard(super().executemany(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db._guard(super().fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._db._guard(super().fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._db._guard(super().fetchval(sql, *args))


class PostgresDatabase:
    """A Database on PostgreSQL (asyncpg pool)."""

    dialect: Dialect = "postgresql"

    def __init__(self, pool: Any, url: str, op_timeout: float) -> None:
        self._pool = pool
        self._url = url
        self._op_timeout = op_timeout
        self._healthy = True

    @classmethod
    async def open(
        cls, url: str, *, op_timeout: float = 5.0, min_size: int = 1, max_size: int = 10
    ) -> PostgresDatabase:
        # The pool is created lazily-connected (min_size connections at start); a server
        # that is down at start is an error of the caller's start-up, reported clearly.
        try:
            async with asyncio.timeout(op_timeout):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=min_size,
                    max_size=max_size,
                    command_timeout=op_timeout,
                    timeout=op_timeout,
                    max_inactive_connection_lifetime=60.0,
                )
        except (*_UNAVAILABLE, asyncpg.exceptions.PostgresError) as exc:
            raise StateUnavailable(f"postgresql unavailable: {exc}") from exc
        return cls(pool, url, op_timeout)

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def _guard(self, coro: Awaitable[T]) -> T:
        try:
            result = await coro
        except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
            raise ConstraintViolation(str(exc)) from exc
        except _UNAVAILABLE as exc:
            self._healthy = False
            raise StateUnavailable(f"postgresql unavailable: {exc or type(exc).__name__}") from exc
        self._healthy = True
        return result

    async def _acquire(self, deadline: float) -> Any:
        """A pool connection, retrying refused connects with backoff until ``deadline``."""
        loop = asyncio.get_running_loop()
        delay = 0.05
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError("deadline reached while connecting")
                return await self._pool.acquire(timeout=left)
            except _UNAVAILABLE as exc:
                if loop.time() + delay >= deadline:
                    self._healthy = False
                    raise StateUnavailable(
                        f"postgresql unavailable: {exc or type(exc).__name__}"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        deadline = asyncio.get_running_loop().time() + self._op_timeout
        conn = await self._acquire(deadline)
        try:
            yield conn
        finally:
            try:
                await self._pool.release(conn, timeout=self._op_timeout)
            except _UNAVAILABLE:
                pass

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._connection() as conn:
            result: int = await self._guard(_PgExecutor(conn).execute(sql, *args))
            return result

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        async with self._connection() as conn:
            await self._guard(_PgExecutor(conn).executemany(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection() as conn:
            rows: list[Row] = await self._guard(_PgExecutor(conn).fetch(sql, *args))
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._connection() as conn:
            row: Row | None = await self._guard(_PgExecutor(conn).fetchrow(sql, *args))
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await self._guard(_PgExecutor(conn).fetchval(sql, *args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """One connection, BEGIN ... COMMIT; ROLLBACK when the block raises."""
        async with self._connection() as conn:
            tx = conn.transaction()
            await self._guard(tx.start())
            try:
                yield _PgTx(conn, self)
            except BaseException:
                try:
                    await tx.rollback()
                except _UNAVAILABLE:
                    pass
                raise
            await self._guard(tx.commit())

    async def ping(self) -> None:
        await self.fetchval("SELECT 1")

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._op_timeout):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()
