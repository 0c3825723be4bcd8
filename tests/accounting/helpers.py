"""Helpers of the accounting tests: polling with a bound, counting rows, a migrated db."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds (tests stay bounded)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - polling a database, no event to wait on
            await asyncio.sleep(0.05)


async def count(db: Database, table: str) -> int:
    return int(await db.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def migrated(url: str) -> Database:
    db = await open_db(url)
    await migrate(db)
    return db
