"""In-memory location store (the embedded default) with an injectable clock."""

from __future__ import annotations

from collections.abc import Sequence

from sipmesh.state.clock import Clock, system_clock
from sipmesh.state.location import Binding, UpdateFn, apply_update, sort_bindings


class MemoryLocationStore:
    """A LocationStore kept in this process.

    ``update`` runs its read-modify-write without awaiting, so it is atomic with
    respect to every other coroutine of the loop: no lock needed. (The update
    function is synchronous by contract.)
    """

    def __init__(self, *, prefix: str = "", clock: Clock = system_clock) -> None:
        self._prefix = prefix
        self._clock = clock
        self._aors: dict[str, dict[str, Binding]] = {}
        self._closed = False

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def healthy(self) -> bool:
        return not self._closed

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True

    def _live(self, aor: str, now: float) -> list[Binding]:
        stored = self._aors.get(aor, {})
        return sort_bindings([b for b in stored.values() if not b.expired(now)])

    async def get(self, aor: str) -> list[Binding]:
        return self._live(aor, self._clock())

    async def get_many(self, aors: Sequence[str]) -> dict[str, list[Binding]]:
        now = self._clock()
        return {aor: self._live(aor, now) for aor in aors}

    async def update(self, aor: str, fn: UpdateFn) -> list[Binding]:
        stored = list(self._aors.get(aor, {}).values())
        new_stored, live = apply_update(aor, stored, fn, self._clock())
        if new_stored:
            self._aors[aor] = new_stored
        else:
            self._aors.pop(aor, None)
        return live

    async def remove(self, aor: str) -> list[Binding]:
        live = self._live(aor, self._clock())
        self._aors.pop(aor, None)
        return live

    async def sweep(self, now: float | None = None) -> list[Binding]:
        at = self._clock() if now is None else now
        expired: list[Binding] = []
        for aor in list(self._aors):
            stored = self._aors[aor]
            gone = [b for b in stored.values() if b.expired(at)]
            for b in gone:
                del stored[b.contact]
            if not stored:
                del self._aors[aor]
            expired.extend(gone)
        return sorted(expired, key=lambda b: (b.expires_at, b.aor, b.contact))

    async def list_aors(self) -> list[str]:
        now = self._clock()
        return sorted(a for a in self._aors if self._live(a, now))

    async def count(self) -> int:
        now = self._clock()
        return sum(len(self._live(a, now)) for a in self._aors)
