"""The remote location index: which peer region a user not registered here lives in.

One KV key per AOR, ``regions:aor:<aor>`` → JSON ``{"region", "address",
"expires_at"}``, with the TTL of the latest binding expiry seen, so an entry whose
home region vanished ages out by itself. It never holds a contact: only the home
region's edges can reach the user's NAT binding or connection (RFC 5626 §5.3), so
the peer relays to the home region's address and the home region looks the user up.

Written only by the replicator (registration events: not the hot path); read by the
router on a local ``lookup`` miss (one GET per miss).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.state.kv import KVStore

KEY_PREFIX = "regions:aor:"

_Kind = events_pb2.RegistrationEvent
_ADDING = (_Kind.KIND_ADDED, _Kind.KIND_REFRESHED)
_REMOVING = (_Kind.KIND_REMOVED, _Kind.KIND_EXPIRED)


@dataclass(frozen=True)
class RemoteHome:
    """Where a user is registered: the home region and its SIP address."""

    region: str
    address: str  # a SIP URI, e.g. "sip:sip-a.example.net:5060"
    expires_at: float  # 0: permanent binding

    def encode(self) -> bytes:
        data = {"region": self.region, "address": self.address, "expires_at": self.expires_at}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RemoteHome | None:
        try:
            data = json.loads(raw)
            return cls(str(data["region"]), str(data["address"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None


class RemoteLookup(Protocol):
    """What the router needs: the home of an AOR not registered locally."""

    async def lookup(self, aor: str) -> RemoteHome | None: ...


class RemoteIndex:
    """The remote index over a region's KV store (implements RemoteLookup)."""

    def __init__(self, kv: KVStore, *, clock: Callable[[], float]) -> None:
        self._kv = kv
        self._clock = clock

    async def lookup(self, aor: str) -> RemoteHome | None:
        raw = await self._kv.get(KEY_PREFIX + aor)
        if raw is None:
            return None
        home = RemoteHome.decode(raw)
        if home is None or (home.expires_at and home.expires_at <= self._clock()):
            return None
        return home

    async def apply(self, region: str, address: str, event: events_pb2.RegistrationEvent) -> bool:
        """Fold one registration event of ``region`` into the index; True if it changed."""
        aor = event.binding.aor
        if not aor:
            return False
        key = KEY_PREFIX + aor
        current = RemoteHome.decode(await self._kv.get(key) or b"{}")
        if event.kind in _REMOVING:
            # `contacts` is the number of bindings the AOR has left after the change.
            if event.contacts == 0 and current is not None and current.region == region:
                return await self._kv.delete(key)
            return False
        if event.kind not in _ADDING:
            return False
        expires_at = event.binding.expires_at
        if current is not None and current.region == region and expires_at:
            # Several contacts: the entry lives as long as the longest-lived one.
            expires_at = 0.0 if not current.expires_at else max(expires_at, current.expires_at)
        now = self._clock()
        if expires_at and expires_at <= now:
            return False
        home = RemoteHome(region, address, expires_at)
        ttl = None if not expires_at else max(1.0, math.ceil(expires_at - now))
        await self._kv.set(key, home.encode(), ttl=ttl)
        return True
