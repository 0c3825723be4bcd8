"""What the Redis backends share: client construction, bounded calls, health.

redis-py retries a failed command itself (exponential backoff, a few attempts) and
reconnects from its pool; on top of that every operation is bounded by
``op_timeout`` so a dead server yields ``StateUnavailable`` instead of a hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from sipmesh.state.errors import StateUnavailable

T = TypeVar("T")

# Driver errors that mean "the server is not there" (as opposed to a bad command).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


def make_redis_client(url: str, *, op_timeout: float = 2.0) -> aioredis.Redis:
    """A pooled async client with bounded sockets and exponential-backoff retries."""
    sock = max(0.1, op_timeout / 2)
    return aioredis.Redis.from_url(
        url,
        socket_timeout=sock,
        socket_connect_timeout=sock,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=15,
        decode_responses=False,
    )


class RedisHealth:
    """Runs operations with a deadline and tracks whether the server answered."""

    def __init__(self, client: aioredis.Redis, op_timeout: float) -> None:
        self.client = client
        self.op_timeout = op_timeout
        self.healthy = True

    async def call(self, op: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await op()
        except UNAVAILABLE_ERRORS as exc:
            self.healthy = False
            raise StateUnavailable(f"redis unavailable: {exc or type(exc).__name__}") from exc
        self.healthy = True
        return result

    async def ping(self) -> None:
        async def op() -> Any:
            return await self.client.ping()

        await self.call(op)


class RedisStore:
    """What every Redis-backed store shares: its key prefix, client and health."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, op_timeout: float, owns_client: bool
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._health = RedisHealth(client, op_timeout)
        self._owns = owns_client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def healthy(self) -> bool:
        return self._health.healthy

    async def ping(self) -> None:
        await self._health.ping()

    async def close(self) -> None:
        if self._owns:
            await self._client.aclose()


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a key prefix matches literally."""
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)
