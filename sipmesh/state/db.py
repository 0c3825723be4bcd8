"""Tables: a small async Database interface over asyncpg and sqlite3.

Callers write SQL once with PostgreSQL's numbered placeholders (``$1``, ``$2``);
the SQLite backend translates them. Rows come back as plain dicts. Timestamps
(Kamailio's DATETIME/TIMESTAMP columns) are naive ``datetime`` values in UTC on both
engines; BYTEA/BLOB columns are ``bytes``.

Implementations: ``db_sqlite.SQLiteDatabase`` (embedded default, one file, WAL) and
``db_postgres.PostgresDatabase`` (an asyncpg pool). The schema lives in
``schema.py`` (``init_schema``/``migrate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, runtime_checkable

Dialect = Literal["sqlite", "postgresql"]
Row = dict[str, Any]


class Executor(Protocol):
    """What can run SQL: the database itself, or one open transaction."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns the number of rows it changed (0 when unknown)."""
        ...

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """First column of the first row, or None when there is no row."""
        ...


@runtime_checkable
class Database(Executor, Protocol):
    """A database handle. Raises ``StateUnavailable`` when the server is down.

    ``transaction()`` yields an Executor bound to one connection: everything run on
    it commits together when the block exits normally and rolls back on an
    exception (nothing half-written, DESIGN.md principle 9).
    """

    @property
    def healthy(self) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Executor]: ...
