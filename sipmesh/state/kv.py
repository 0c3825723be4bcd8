"""Key/value store with TTL and atomic counters: the interface.

Bans, nonce counts, flood counters and dialog state live here. Implementations:
``kv_memory.MemoryKV`` (embedded default, injectable clock) and
``kv_redis.RedisKV``. Every key is stored under the store's ``prefix`` so that tests
and tenants never see each other's keys; the methods take and return keys without
the prefix.

The hot path must not make one round trip per SIP message (DESIGN.md, Performance):
``get_many`` is one round trip, and ``batch()`` queues any mix of operations and runs
them in one pipelined round trip on Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


class Pending(Generic[T]):
    """The result of one operation queued in a :class:`KVBatch`, filled by ``execute``."""

    __slots__ = ("_done", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None

    def set_result(self, value: T) -> None:
        self._value = value
        self._done = True

    @property
    def done(self) -> bool:
        return self._done

    @property
    def value(self) -> T:
        """The operation's result; ``RuntimeError`` before the batch has executed."""
        if not self._done:
            raise RuntimeError("batch not executed yet")
        return self._value  # type: ignore[return-value]


class KVBatch(Protocol):
    """Operations queued for one round trip.

    Each operation is atomic on its own; the batch as a whole is not a transaction
    (other clients may interleave between its operations).
    """

    def get(self, key: str) -> Pending[bytes | None]: ...
    def set(self, key: str, value: bytes, ttl: float | None = None) -> Pending[None]: ...
    def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> Pending[bool]: ...
    def delete(self, key: str) -> Pending[bool]: ...
    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> Pending[int]: ...
    def __len__(self) -> int: ...

    async def execute(self) -> list[object]:
        """Run every queued operation; fills each Pending and returns results in order."""
        ...


@runtime_checkable
class KVStore(Protocol):
    """Async key/value store. Values are bytes; TTLs are seconds (fractions allowed).

    Errors: ``StateUnavailable`` when the backend cannot be reached within the
    store's operation timeout.
    """

    @property
    def prefix(self) -> str:
        """The prefix under which this store's keys live."""
        ...

    @property
    def healthy(self) -> bool:
        """False after an operation or ping failed to reach the backend (for /ready)."""
        ...

    async def ping(self) -> None:
        """Raise ``StateUnavailable`` when the backend does not answer."""
        ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values of several keys in one round trip, in the order of ``keys``."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value``; ``ttl`` None means no expiry (and clears an earlier one)."""
        ...

    async def set_if_absent(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store only when the key does not exist; True when stored (SET NX)."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the key; True when it existed."""
        ...

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` atomically and return the new value.

        A missing key counts as 0. ``ttl`` is applied only when this call creates
        the key, so a flood counter's window starts at its first hit.
        """
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left before the key expires; ``math.inf`` without expiry; None if absent."""
        ...

    async def scan(self, prefix: str = "") -> list[str]:
        """Every live key starting with ``prefix`` (without the store prefix). Not hot path."""
        ...

    def batch(self) -> KVBatch:
        """A new empty batch bound to this store."""
        ...
