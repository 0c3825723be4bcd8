"""In-memory key/value store (the embedded default) with an injectable clock."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from sipmesh.state.clock import Clock, system_clock
from sipmesh.state.kv import KVBatch, Pending


class MemoryKV:
    """A KVStore kept in this process. Expiry is checked against ``clock`` on access.

    Every method body runs without awaiting, so each operation (and each batch) is
    atomic with respect to other coroutines of the event loop.
    """

    def __init__(self, *, prefix: str = "", clock: Clock = system_clock) -> None:
        self._prefix = prefix
        self._clock = clock
        # key (with prefix) -> (value, absolute expiry or None)
        self._data: dict[str, tuple[bytes, float | None]] = {}
        # (expiry, key) of keys written with a TTL: lets writes drop expired keys that
        # nobody reads again (old nonces, bans), so memory does not grow without bound.
        self._expiries: list[tuple[float, str]] = []
        self._closed = False

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def healthy(self) -> bool:
        return not self._closed

    async def ping(self) -> None:
        return None

    def stored_keys(self) -> int:
        """Keys held in memory, expired ones not yet dropped included (for tests/metrics)."""
        return len(self._data)

    async def close(self) -> None:
        self._closed = True

    # -- synchronous cores, shared by the methods and the batch ---------------------

    def _live(self, full: str) -> tuple[bytes, float | None] | None:
        item = self._data.get(full)
        if item is None:
            return None
        if item[1] is not None and item[1] <= self._clock():
            del self._data[full]
            return None
        return item

    def _expiry(self, ttl: float | None) -> float | None:
        if ttl is None:
            return None
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        return self._clock() + ttl

    def _get(self, key: str) -> bytes | None:
        item = self._live(self._prefix + key)
        return None if item is None else item[0]

    def _purge(self) -> None:
        now = self._clock()
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires, full = heapq.heappop(heap)
            item = self._data.get(full)
            if item is not None and item[1] == expires:
                del self._data[full]

    def _put(self, full: str, value: bytes, expires: float | None) -> None:
        self._purge()
        self._data[full] = (value, expires)
        if expires is not None:
            heapq.heappush(self._expiries, (expires, full))

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._put(self._prefix + key, bytes(value), self._expiry(ttl))

    def _set_if_absent(self, key: str, value: bytes, ttl: float | None) -> bool:
        if self._live(self._prefix + key) is not None:
            return False
        self._set(key, value, ttl)
        return True

    def _delete(self, key: str) -> bool:
        existed = self._live(self._prefix + key) is not None
        self._data.pop(self._prefix + key, None)
        return existed

    def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        full = self._prefix + key
        item = self._live(full)
        if item is None:
            expires = self._expiry(ttl)
            current = 0
        else:
            expires = item[1]
            try:
                current = int(item[0])
            except ValueError:
                raise ValueError(f"value of {key!r} is not an integer") from None
        new = current + amount
        if item is None:
            self._put(full, str(new).encode(), expires)
        else:
            self._data[full] = (str(new).encode(), expires)  # same expiry: heap entry stands
        return new

    # -- the KVStore methods ---------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        return self._get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._set(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        return self._set_if_absent(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self._delete(key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return self._incr(key, amount, ttl)

    async def ttl(self, key: str) -> float | None:
        item = self._live(self._prefix + key)
        if item is None:
            return None
        if item[1] is None:
            return math.inf
        return round(item[1] - self._clock(), 6)

    async def scan(self, prefix: str = "") -> list[str]:
        start = self._prefix + prefix
        n = len(self._prefix)
        return sorted(k[n:] for k in list(self._data) if k.startswith(start) and self._live(k))

    def batch(self) -> KVBatch:
        return MemoryBatch(self)


class MemoryBatch:
    """Queued operations of a MemoryKV, run back to back (atomically) by execute."""

    def __init__(self, store: MemoryKV) -> None:
        self._store = store
        self._ops: list[tuple[Callable[[], object], Pending[object]]] = []

    def _add(self, op: Callable[[], object]) -> Pending[object]:
        pending: Pending[object] = Pending()
        self._ops.append((op, pending))
        return pending

    def get(self, key: str) -> Pending[bytes | None]:
        return self._add(lambda: self._store._get(key))  # type: ignore[return-value]

    def set(self, key: str, value: bytes, ttl: float | None = None) -> Pending[None]:
        return self._add(lambda: self._store._set(key, value, ttl))  # type: ignore[return-value]

    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> Pending[bool]:
        op = lambda: self._store._set_if_absent(key, value, ttl)  # noqa: E731
        return self._add(op)  # type: ignore[return-value]

    def delete(self, key: str) -> Pending[bool]:
        return self._add(lambda: self._store._delete(key))  # type: ignore[return-value]

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> Pending[int]:
        return self._add(lambda: self._store._incr(key, amount, ttl))  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._ops)

    async def execute(self) -> list[object]:
        ops, self._ops = self._ops, []
        results: list[object] = []
        for op, pending in ops:
            value = op()
            pending.set_result(value)
            results.append(value)
        return results
