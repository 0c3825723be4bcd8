"""Choosing a relay among several: consistent hashing of the Call-ID, health by ping.

What Kamailio's rtpengine module does with a set of rtpengine nodes, for callers of
sipmesh that talk ng (or gRPC) to several relays: every command of one call must
reach the relay that holds the call, so the relay is a pure function of the Call-ID
(rendezvous / highest-random-weight hashing: removing a relay moves only that
relay's calls, adding one takes an even share). A relay that stops answering pings
is skipped until it answers again; calls it held are lost with it (as with
rtpengine without a shared Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["NoRelayAvailable", "RelaySelector", "rendezvous_order"]

log = logging.getLogger("sipmesh.media_relay")

Pinger = Callable[[str], Awaitable[bool]]


class NoRelayAvailable(Exception):
    pass


def _score(call_id: str, relay: str) -> bytes:
    return hashlib.blake2b(f"{call_id}\0{relay}".encode(), digest_size=8).digest()


def rendezvous_order(call_id: str, relays: Sequence[str]) -> list[str]:
    """Relays from most to least preferred for ``call_id``."""
    return sorted(relays, key=lambda r: _score(call_id, r), reverse=True)


class RelaySelector:
    """Picks the relay of a call; ``ping`` says whether a relay answers.

    ``fail_after`` missed pings mark a relay down, one answered ping brings it back.
    """

    def __init__(
        self,
        relays: Sequence[str],
        ping: Pinger,
        *,
        interval: float = 1.0,
        fail_after: int = 2,
    ) -> None:
        if not relays:
            raise ValueError("no relay given")
        self._relays = list(dict.fromkeys(relays))
        self._ping = ping
        self._interval = interval
        self._fail_after = fail_after
        self._missed: dict[str, int] = dict.fromkeys(self._relays, 0)
        self._task: asyncio.Task[None] | None = None

    @property
    def relays(self) -> list[str]:
        return list(self._relays)

    def healthy(self) -> list[str]:
        return [r for r in self._relays if self._missed[r] < self._fail_after]

    def choose(self, call_id: str) -> str:
        """The healthy relay owning ``call_id``; NoRelayAvailable when all are down."""
        healthy = self.healthy()
        if not healthy:
            raise NoRelayAvailable(f"none of {len(self._relays)} media relays answers pings")
        return max(healthy, key=lambda r: _score(call_id, r))

    async def check(self) -> None:
        """Ping every relay once (concurrently)."""
        results = await asyncio.gather(
            *(self._safe_ping(r) for r in self._relays), return_exceptions=False
        )
        for relay, ok in zip(self._relays, results, strict=True):
            if ok:
                if self._missed[relay] >= self._fail_after:
                    log.info("media relay %s answers again", relay)
                self._missed[relay] = 0
            else:
                self._missed[relay] += 1
                if self._missed[relay] == self._fail_after:
                    log.warning("media relay %s stopped answering pings; skipped", relay)

    async def _safe_ping(self, relay: str) -> bool:
        try:
            return await self._ping(relay)
        except Exception:
            return False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay-selector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


def ng_pinger(timeout: float = 0.5) -> Pinger:
    """A Pinger for ng relays named ``host:port``."""
    from sipmesh.media_relay.ng import NgClient
    from sipmesh.runtime.config import split_hostport

    async def ping(relay: str) -> bool:
        host, port = split_hostport(relay)
        client = await NgClient.connect(host, port)
        try:
            return await client.ping(timeout=timeout)
        finally:
            client.close()

    return ping
