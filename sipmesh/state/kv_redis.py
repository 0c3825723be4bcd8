"""Redis key/value store: every operation one command, batches one pipeline."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from sipmesh.state.kv import KVBatch, Pending
from sipmesh.state.redis_common import RedisStore, glob_escape

# INCRBY that sets the expiry only when it creates the key (a flood window starts at
# its first hit). EXISTS and INCRBY run in one script, so atomically.
INCR_TTL_SCRIPT = """
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def _b(value: Any) -> bytes | None:
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


def _ms(ttl: float) -> int:
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return max(1, round(ttl * 1000))


class RedisKV(RedisStore):
    """A KVStore on Redis. ``client`` may be shared with other stores."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        op_timeout: float = 2.0,
        owns_client: bool = True,
    ) -> None:
        super().__init__(client, prefix=prefix, op_timeout=op_timeout, owns_client=owns_client)

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        result = await self._health.call(lambda: self._client.get(self._k(key)))
        return _b(result)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values = await self._health.call(lambda: self._client.mget([self._k(k) for k in keys]))
        return [_b(v) for v in values]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        px = None if ttl is None else _ms(ttl)
        await self._health.call(lambda: self._client.set(self._k(key), value, px=px))

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        px = None if ttl is None else _ms(ttl)
        result = await self._health.call(
            lambda: self._client.set(self._k(key), value, px=px, nx=True)
        )
        return bool(result)

    async def delete(self, key: str) -> bool:
        return bool(await self._health.call(lambda: self._client.delete(self._k(key))))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        try:
            if ttl is None:
                return int(
                    await self._health.call(lambda: self._client.incrby(self._k(key), amount))
                )
            ms = _ms(ttl)
            result = await self._health.call(
                lambda: self._client.eval(INCR_TTL_SCRIPT, 1, self._k(key), amount, ms)
            )
            return int(result)
        except ResponseError as exc:
            raise ValueError(f"value of {key!r} is not an integer") from exc

    async def ttl(self, key: str) -> float | None:
        ms = int(await self._health.call(lambda: self._client.pttl(self._k(key))))
        if ms == -2:
            return None
        if ms == -1:
            return math.inf
        return ms / 1000.0

    async def scan(self, prefix: str = "") -> list[str]:
        pattern = glob_escape(self._prefix + prefix) + "*"
        n = len(self._prefix)

        async def op() -> list[str]:
            found = [k async for k in self._client.scan_iter(match=pattern, count=1000)]
            return sorted({bytes(k).decode()[n:] for k in found})

        return await self._health.call(op)

    def batch(self) -> KVBatch:
        return RedisBatch(self)


class RedisBatch:
    """Operations queued into one non-transactional pipeline (one round trip)."""

    def __init__(self, store: RedisKV) -> None:
        self._store = store
        self._ops: list[tuple[Callable[[Any], None], Callable[[Any], object], Pending[object]]] = []

    def _add(self, queue: Callable[[Any], None], convert: Callable[[Any], object]) -> Pending[Any]:
        pending: Pending[object] = Pending()
        self._ops.append((queue, convert, pending))
        return pending

    def get(self, key: str) -> Pending[bytes | None]:
        k = self._store._k(key)
        return self._add(lambda p: p.get(k), lambda v: None if v is None else bytes(v))

    def set(self, key: str, value: bytes, ttl: float | None = None) -> Pending[None]:
        k, px = self._store._k(key), None if ttl is None else _ms(ttl)
        return self._add(lambda p: p.set(k, value, px=px), lambda v: None)

    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> Pending[bool]:
        k, px = self._store._k(key), None if ttl is None else _ms(ttl)
        return self._add(lambda p: p.set(k, value, px=px, nx=True), bool)

    def delete(self, key: str) -> Pending[bool]:
        k = self._store._k(key)
        return self._add(lambda p: p.delete(k), bool)

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> Pending[int]:
        k = self._store._k(key)
        if ttl is None:
            return self._add(lambda p: p.incrby(k, amount), int)
        ms = _ms(ttl)
        return self._add(lambda p: p.eval(INCR_TTL_SCRIPT, 1, k, amount, ms), int)

    def __len__(self) -> int:
        return len(self._ops)

    async def execute(self) -> list[object]:
        ops, self._ops = self._ops, []
        if not ops:
            return []
        client = self._store._client

        async def run() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for queue, _, _ in ops:
                    queue(pipe)
                return list(await pipe.execute(raise_on_error=False))

        raw = await self._store._health.call(run)
        results: list[object] = []
        for (_, convert, pending), value in zip(ops, raw, strict=True):
            if isinstance(value, ResponseError):
                raise ValueError(f"batch operation failed: {value}")
            converted = convert(value)
            pending.set_result(converted)
            results.append(converted)
        return results
