"""The shared ban list (Kamailio's htable ``ipban``), kept in the key/value store.

The edge's anti-flood check bans a source, the registrar's lockout bans one after
repeated failed authentications, the admin API lists and lifts bans; every edge
instance reads the same keys, so a ban taken anywhere holds everywhere as soon as
the store has it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sipmesh.state.kv import KVStore

KEY_PREFIX = "ban:"


@dataclass(frozen=True, slots=True)
class Ban:
    source: str
    reason: str
    remaining: float  # seconds; math.inf for a ban without expiry


class BanList:
    def __init__(self, kv: KVStore) -> None:
        self._kv = kv

    async def ban(self, source: str, seconds: float | None, reason: str) -> None:
        """Ban ``source`` (an IP address) for ``seconds`` (None: until lifted)."""
        await self._kv.set(KEY_PREFIX + source, reason.encode(), ttl=seconds)

    async def lift(self, source: str) -> bool:
        return await self._kv.delete(KEY_PREFIX + source)

    async def is_banned(self, source: str) -> bool:
        return await self._kv.get(KEY_PREFIX + source) is not None

    async def banned(self, sources: Sequence[str]) -> list[bool]:
        """Which of ``sources`` are banned, in one round trip (a batch of datagrams)."""
        values = await self._kv.get_many([KEY_PREFIX + s for s in sources])
        return [v is not None for v in values]

    async def list(self) -> list[Ban]:
        bans: list[Ban] = []
        for key in await self._kv.scan(KEY_PREFIX):
            value = await self._kv.get(key)
            remaining = await self._kv.ttl(key)
            if value is None or remaining is None:
                continue  # expired between scan and read
            bans.append(
                Ban(
                    key.removeprefix(KEY_PREFIX),
                    value.decode(errors="replace"),
                    remaining if remaining != math.inf else math.inf,
                )
            )
        return sorted(bans, key=lambda b: b.source)
