"""Redis location store.

Layout (all under the store prefix ``P``):

- ``P loc:b:<aor>``  one hash per AOR: contact -> Binding JSON. Its key TTL is the
  longest binding's remaining lifetime plus ``sweep_grace``, so an AOR nobody
  sweeps still disappears, but a sweeper normally sees (and reports) it first.
- ``P loc:exp``      one sorted set of ``<aor>\\n<contact>`` scored by expires_at: the
  sweep index, and the source of list_aors/count.

``update`` is optimistic: WATCH the AOR's hash, read, apply the pure update function,
then MULTI/EXEC the new hash and index entries; a concurrent writer (another
registrar process, or a sweeper) makes EXEC fail and the update is retried.
``sweep`` is one Lua script, so each expired binding is removed, and returned, by
exactly one sweeper. The keys a script derives are not declared, so this layout is
for a single Redis (or a replicated primary), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from sipmesh.state.clock import Clock, system_clock
from sipmesh.state.errors import StateConflict
from sipmesh.state.location import Binding, UpdateFn, apply_update, sort_bindings
from sipmesh.state.redis_common import RedisStore

SWEEP_SCRIPT = """
local zkey, hprefix = KEYS[1], ARGV[1]
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, m in ipairs(members) do
  redis.call('ZREM', zkey, m)
  local sep = string.find(m, '\\n', 1, true)
  local hkey = hprefix .. string.sub(m, 1, sep - 1)
  local contact = string.sub(m, sep + 1)
  local v = redis.call('HGET', hkey, contact)
  if v then
    local exp = tonumber(cjson.decode(v)['expires_at'])
    if exp <= now then
      redis.call('HDEL', hkey, contact)
      table.insert(out, v)
    else
      redis.call('ZADD', zkey, string.format('%.17g', exp), m)
    end
  end
end
return {#members, out}
"""


def _member(b: Binding) -> str:
    return f"{b.aor}\n{b.contact}"


class RedisLocationStore(RedisStore):
    """A LocationStore on Redis; see the module docstring for the layout."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "",
        clock: Clock = system_clock,
        op_timeout: float = 2.0,
        max_retries: int = 50,
        sweep_grace: float = 300.0,
        sweep_batch: int = 500,
        owns_client: bool = True,
    ) -> None:
        super().__init__(client, prefix=prefix, op_timeout=op_timeout, owns_client=owns_client)
        self._clock = clock
        self._max_retries = max_retries
        self._grace = sweep_grace
        self._sweep_batch = sweep_batch
        self._zkey = f"{prefix}loc:exp"
        self._hprefix = f"{prefix}loc:b:"

    def _hkey(self, aor: str) -> str:
        return self._hprefix + aor

    @staticmethod
    def _decode(raw: dict[Any, Any]) -> list[Binding]:
        return [Binding.from_json(v) for v in raw.values()]

    async def get(self, aor: str) -> list[Binding]:
        raw = await self._health.call(lambda: self._client.hgetall(self._hkey(aor)))
        now = self._clock()
        return sort_bindings([b for b in self._decode(raw) if not b.expired(now)])

    async def get_many(self, aors: Sequence[str]) -> dict[str, list[Binding]]:
        if not aors:
            return {}

        async def run() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for aor in aors:
                    pipe.hgetall(self._hkey(aor))
                return list(await pipe.execute())

        raws = await self._health.call(run)
        now = self._clock()
        return {
            aor: sort_bindings([b for b in self._decode(raw) if not b.expired(now)])
            for aor, raw in zip(aors, raws, strict=True)
        }

    async def _transact(
        self,
        aor: str,
        compute: Callable[[list[Binding]], tuple[dict[str, Binding], list[Binding]]],
    ) -> list[Binding]:
        """WATCH/MULTI optimistic read-modify-write of one AOR; returns compute's 2nd."""
        hkey = self._hkey(aor)

        async def attempt() -> tuple[bool, list[Binding]]:
            async with self._client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(hkey)
                    stored = self._decode(await pipe.hgetall(hkey))
                    new_stored, result = compute(stored)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    gone = [_member(b) for b in stored if b.contact not in new_stored]
                    pipe.delete(hkey)
                    if gone:
                        pipe.zrem(self._zkey, *gone)
                    if new_stored:
                        pipe.hset(hkey, mapping={c: b.to_json() for c, b in new_stored.items()})
                        longest = max(b.expires_at for b in new_stored.values())
                        ttl = max(1.0, longest - self._clock()) + self._grace
                        pipe.pexpire(hkey, round(ttl * 1000))
                        pipe.zadd(
                            self._zkey, {_member(b): b.expires_at for b in new_stored.values()}
                        )
                    await pipe.execute()
                except WatchError:
                    return False, []
                return True, result

        for n in range(self._max_retries):
            done, result = await self._health.call(attempt)
            if done:
                return result
            # Back off a little (randomised) so two hot writers stop colliding.
            await asyncio.sleep(random.uniform(0, 0.002 * min(n + 1, 10)))
        raise StateConflict(f"update of {aor!r} lost {self._max_retries} races")

    async def update(self, aor: str, fn: UpdateFn) -> list[Binding]:
        return await self._transact(
            aor, lambda stored: apply_update(aor, stored, fn, self._clock())
        )

    async def remove(self, aor: str) -> list[Binding]:
        def compute(stored: list[Binding]) -> tuple[dict[str, Binding], list[Binding]]:
            now = self._clock()
            return {}, sort_bindings([b for b in stored if not b.expired(now)])

        return await self._transact(aor, compute)

    async def sweep(self, now: float | None = None) -> list[Binding]:
        at = self._clock() if now is None else now
        expired: list[Binding] = []
        while True:
            seen, values = await self._health.call(
                lambda: self._client.eval(
                    SWEEP_SCRIPT, 1, self._zkey, self._hprefix, repr(at), self._sweep_batch
                )
            )
            expired.extend(Binding.from_json(v) for v in values)
            if int(seen) < self._sweep_batch:
                break
        return sorted(expired, key=lambda b: (b.expires_at, b.aor, b.contact))

    async def _live_members(self) -> list[bytes]:
        now = self._clock()
        members = await self._health.call(
            lambda: self._client.zrangebyscore(self._zkey, f"({now!r}", "+inf")
        )
        return [m if isinstance(m, bytes) else str(m).encode() for m in members]

    async def list_aors(self) -> list[str]:
        return sorted({m.decode().split("\n", 1)[0] for m in await self._live_members()})

    async def count(self) -> int:
        now = self._clock()
        return int(
            await self._health.call(lambda: self._client.zcount(self._zkey, f"({now!r}", "+inf"))
        )
