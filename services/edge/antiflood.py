"""Anti-flood: Kamailio's pike (per-source rate) plus the htable ``ipban`` of kamailio.cfg.

Decisions are local and cheap (DESIGN.md, Performance): each edge counts requests per
source over an exact sliding window (a ring of the last ``limit`` arrival times) and
keeps a local view of the bans. A background task syncs with the shared key/value
store every ``sync_interval`` (default 0.5 s) in one pipelined round trip:

- bans taken here are written (``ban:<ip>`` with the ban time as TTL, sipmesh.bans);
- this edge's request counts since the last sync are added to shared per-source
  counters (``pike:<ip>:<window number>``), so a flood spread over several edge
  instances is seen too;
- the ban keys of every source seen lately (and of every source banned locally) are
  read back, so a ban taken by another instance, or lifted through the admin API,
  holds here within one sync interval.

On top of that, bans and lifts announced on the bus (``sipmesh.ban.added`` /
``removed``, services/edge/banevents.py) are learned at once with ``learn_ban`` /
``learn_lift``, also for sources this edge has never seen; the sync stays the
fallback (events are fire and forget) and the truth for what the store holds.

There is never a store round trip per datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sipmesh.bans import KEY_PREFIX as BAN_PREFIX
from sipmesh.state.kv import KVStore, Pending

__all__ = ["AntiFlood", "FloodConfig"]

log = logging.getLogger("sipmesh.edge.antiflood")

COUNTER_PREFIX = "pike:"
# Cap on the sources read back per sync, so one sync stays one bounded round trip.
_MAX_SYNC_SOURCES = 20000


@dataclass(frozen=True, slots=True)
class FloodConfig:
    window: float = 2.0
    limit: int = 16
    ban_time: float = 300.0
    sync_interval: float = 0.5
    trusted: tuple[str, ...] = ()


class AntiFlood:
    """Per-source rate limit and shared bans. ``allow`` and ``is_banned`` are sync."""

    def __init__(
        self,
        kv: KVStore,
        config: FloodConfig,
        *,
        clock: Callable[[], float],
        on_ban: Callable[[str, float], None] | None = None,
    ) -> None:
        self._kv = kv
        self._cfg = config
        self._clock = clock
        self._on_ban = on_ban
        self._trusted_nets = tuple(ipaddress.ip_network(t, strict=False) for t in config.trusted)
        self._trusted_cache: dict[str, bool] = {}
        self._windows: dict[str, deque[float]] = {}
        self._deltas: dict[str, int] = {}
        # Local view of bans: ip -> time until which it is dropped here.
        self._bans: dict[str, float] = {}
        self._pending_bans: dict[str, float] = {}
        # Bans learned from the bus: ip -> when. The ban's publisher writes the store
        # at its next sync, so until then a missing key does not lift them here.
        self._learned: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0

    # -- hot path -------------------------------------------------------------------

    def is_banned(self, ip: str) -> bool:
        until = self._bans.get(ip)
        if until is None:
            return False
        if until <= self._clock():
            del self._bans[ip]
            return False
        return True

    def trusted(self, ip: str) -> bool:
        hit = self._trusted_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self._trusted_nets)
            except ValueError:
                hit = False
            if len(self._trusted_cache) > 65536:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = hit
        return hit

    def allow(self, ip: str) -> bool:
        """Count one request from ``ip``; False when it exceeds the rate (and bans it)."""
        if not self._trusted_nets or not self.trusted(ip):
            now = self._clock()
            ring = self._windows.get(ip)
            if ring is None:
                ring = self._windows[ip] = deque(maxlen=self._cfg.limit)
            self._deltas[ip] = self._deltas.get(ip, 0) + 1
            if len(ring) == self._cfg.limit and now - ring[0] < self._cfg.window:
                # limit+1 requests inside one window: pike's "flood detected".
                self.ban(ip, "flood")
                return False
            ring.append(now)
        return True

    def ban(self, ip: str, reason: str = "flood", seconds: float | None = None) -> None:
        """Ban locally now; the shared store gets it at the next sync."""
        duration = self._cfg.ban_time if seconds is None else seconds
        until = self._clock() + duration
        self._bans[ip] = until
        self._pending_bans[ip] = duration
        self._windows.pop(ip, None)
        if self._on_ban is not None:
            self._on_ban(ip, until)

    # -- bans announced by others (the bus) ------------------------------------------

    def learn_ban(self, ip: str, until: float | None = None) -> None:
        """A ban taken elsewhere (another edge, the admin API): dropped here at once.

        ``until`` is the ban's end on this clock (None or past: ban_time from now).
        """
        now = self._clock()
        if until is None or until <= now:
            until = now + self._cfg.ban_time
        self._bans[ip] = max(self._bans.get(ip, 0.0), until)
        self._learned[ip] = now
        self._windows.pop(ip, None)

    def learn_lift(self, ip: str) -> None:
        """A ban lifted elsewhere (the admin API): served again here at once."""
        self._bans.pop(ip, None)
        self._pending_bans.pop(ip, None)
        self._learned.pop(ip, None)

    def _learned_lately(self, ip: str, now: float) -> bool:
        at = self._learned.get(ip)
        if at is None:
            return False
        # Two sync intervals (plus a second of slack) for the publisher's own sync.
        if now - at <= 2 * self._cfg.sync_interval + 1.0:
            return True
        del self._learned[ip]
        return False

    # -- background sync --------------------------------------------------------------

    async def sync(self) -> None:
        """One pipelined round trip with the store (see the module docstring)."""
        now = self._clock()
        cfg = self._cfg
        # Forget sources whose window has passed: they no longer need counting.
        for ip in [
            ip for ip, ring in self._windows.items() if not ring or now - ring[-1] > cfg.window
        ]:
            del self._windows[ip]
        pending, self._pending_bans = self._pending_bans, {}
        deltas, self._deltas = self._deltas, {}
        bucket = int(now // cfg.window)
        batch = self._kv.batch()
        for ip, seconds in pending.items():
            batch.set(BAN_PREFIX + ip, b"flood", ttl=seconds)
        counters: list[tuple[str, Pending[int]]] = []
        for ip, count in deltas.items():
            if ip not in self._bans:
                key = f"{COUNTER_PREFIX}{ip}:{bucket}"
                counters.append((ip, batch.incr(key, count, ttl=cfg.window * 2)))
        watched = list(dict.fromkeys([*self._windows, *self._bans]))[:_MAX_SYNC_SOURCES]
        reads = [(ip, batch.get(BAN_PREFIX + ip)) for ip in watched]
        if not len(batch):
            return
        try:
            await batch.execute()
        except Exception as exc:  # the store is down: keep deciding locally, retry later
            log.warning("anti-flood sync failed: %s", exc)
            for ip, seconds in pending.items():
                self._pending_bans.setdefault(ip, seconds)
            return
        self.syncs += 1
        for ip, total in counters:
            # The shared count of this window over every instance (fixed windows: an
            # approximation of pike's sliding one, good enough across instances).
            if total.value > cfg.limit and ip not in self._bans:
                self.ban(ip, "flood")
        now = self._clock()
        for ip, value in reads:
            if value.value is not None:
                if ip not in self._bans:
                    # Banned elsewhere (another edge, the registrar's lockout, admin).
                    self._bans[ip] = now + cfg.ban_time
            elif (
                ip in self._bans
                and ip not in self._pending_bans
                and ip not in pending
                and not self._learned_lately(ip, now)
            ):
                # Lifted (admin) or expired in the store: the store is the truth.
                del self._bans[ip]
                self._learned.pop(ip, None)

    def known_bans(self) -> Iterable[str]:
        return list(self._bans)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.sync_interval)
            try:
                await self.sync()
            except Exception:  # pragma: no cover - sync already guards the store call
                log.exception("anti-flood sync crashed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.sync()  # write bans taken since the last sync
