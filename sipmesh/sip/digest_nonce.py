"""Stateless server nonces and nonce-count replay tracking for Digest (RFC 7616 §3.3-3.4).

No storage is needed to verify a nonce: it carries its issue time and an HMAC under a
secret shared by all instances. Replay protection (nc must grow per nonce) is data
the caller records atomically in its shared store: :class:`NonceUse`, checked by
:func:`accept_nonce_count` and the :class:`NonceCountTracker` contract.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sipmesh.sip.digest import DigestChallenge

__all__ = [
    "MemoryNonceCountTracker",
    "NonceCountTracker",
    "NonceFactory",
    "NonceStatus",
    "NonceUse",
    "accept_nonce_count",
]


class NonceStatus(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # well-formed and ours, but expired: challenge again with stale=true
    INVALID = "invalid"  # not issued by us (or tampered with)


class NonceFactory:
    """Stateless server nonces: base64url(timestamp ‖ salt ‖ HMAC(secret, timestamp ‖ salt)).

    Every instance sharing ``secret`` verifies nonces of every other instance without
    storage (the approach of Kamailio's auth module with a shared secret). ``salt``
    makes nonces issued in the same instant distinct, so nonce-count tracking keyed by
    nonce does not mix up clients. ``random_bytes`` is injectable for tests.
    """

    _TS = struct.Struct(">d")
    _SALT_LEN = 8
    _MAC_LEN = 16

    def __init__(
        self,
        secret: bytes,
        lifetime: float,
        *,
        clock_skew: float = 5.0,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("NonceFactory needs a non-empty secret")
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        self._secret = secret
        self.lifetime = lifetime
        self._skew = clock_skew
        self._random = random_bytes

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[: self._MAC_LEN]

    def issue(self, now: float) -> str:
        payload = self._TS.pack(now) + self._random(self._SALT_LEN)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii")

    def issued_at(self, nonce: str) -> float | None:
        """The timestamp inside a nonce that carries our MAC, else None."""
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        expected_len = self._TS.size + self._SALT_LEN + self._MAC_LEN
        if len(raw) != expected_len:
            return None
        payload, mac = raw[: -self._MAC_LEN], raw[-self._MAC_LEN :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        (issued,) = self._TS.unpack_from(payload)
        return float(issued)

    def check(self, nonce: str, now: float) -> NonceStatus:
        issued = self.issued_at(nonce)
        if issued is None or issued != issued:  # NaN never comes from issue()
            return NonceStatus.INVALID
        if issued > now + self._skew:
            return NonceStatus.INVALID
        if now - issued > self.lifetime:
            return NonceStatus.STALE
        return NonceStatus.VALID

    def expires_at(self, nonce: str) -> float | None:
        issued = self.issued_at(nonce)
        return None if issued is None else issued + self.lifetime

    def challenge(
        self,
        realm: str,
        now: float,
        *,
        algorithm: str | None = "MD5",
        qop: Iterable[str] = ("auth",),
        stale: bool = False,
        opaque: str | None = None,
    ) -> DigestChallenge:
        """A fresh challenge for ``realm`` with a new nonce."""
        from sipmesh.sip.digest import DigestChallenge

        return DigestChallenge(
            realm=realm,
            nonce=self.issue(now),
            algorithm=algorithm,
            qop=tuple(qop),
            opaque=opaque,
            stale=stale,
        )


@dataclass(frozen=True, slots=True)
class NonceUse:
    """A (nonce, nc) pair the caller must record atomically before accepting a request.

    ``expires_at`` lets the store drop the record when the nonce can no longer be valid.
    """

    nonce: str
    nc: int
    expires_at: float


def accept_nonce_count(previous_max: int | None, nc: int) -> bool:
    """Replay rule (RFC 7616 §3.4, RFC 2617 §3.2.2): nc must grow for a given nonce.

    Strictly greater than every nc seen before for this nonce; nc starts at 1.
    """
    if nc < 1:
        return False
    return previous_max is None or nc > previous_max


class NonceCountTracker(Protocol):
    """Shared store for nonce counts, backed by e.g. Redis (a Lua compare-and-set).

    ``record`` must be atomic across instances: store ``use.nc`` for ``use.nonce`` only
    if :func:`accept_nonce_count` holds for the stored value, and report whether it did.
    Async stores wrap this contract in their own coroutine; the rule stays here.
    """

    def record(self, use: NonceUse, now: float) -> bool: ...


@dataclass(slots=True)
class MemoryNonceCountTracker:
    """In-process :class:`NonceCountTracker` for the embedded mode and for tests."""

    _seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def record(self, use: NonceUse, now: float) -> bool:
        # Expired entries are dropped lazily; their nonces verify as STALE anyway.
        for nonce in [n for n, (_, exp) in self._seen.items() if exp < now]:
            del self._seen[nonce]
        previous = self._seen.get(use.nonce)
        if not accept_nonce_count(None if previous is None else previous[0], use.nc):
            return False
        self._seen[use.nonce] = (use.nc, use.expires_at)
        return True
