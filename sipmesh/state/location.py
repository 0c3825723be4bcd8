"""Location store (AOR -> contact bindings): the interface and the Binding record.

Semantics follow Kamailio's usrloc: each binding has its own absolute expiry; reads
never return expired bindings; a sweep removes expired ones and reports each of them
to exactly one sweeper (so "expired" events are published once even when several
registrar instances sweep); one AOR's bindings are replaced atomically by
:meth:`LocationStore.update` even when several processes update it at once
(RFC 3261 §10.3 processes a REGISTER as read-modify-write of the AOR's bindings).

Implementations: ``location_memory.MemoryLocationStore`` and
``location_redis.RedisLocationStore``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One contact bound to an address-of-record.

    Immutable: an update function builds new bindings with ``dataclasses.replace``.
    Bindings of one AOR are identified by ``contact`` (the Contact URI text); a store
    rejects a list with two bindings of the same contact.
    """

    aor: str
    contact: str
    #: Absolute expiry, epoch seconds.
    expires_at: float
    #: Contact q-value (RFC 3261 §10.2.1.2); None when the UA gave none.
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    #: Path header values in order (RFC 3327).
    path: tuple[str, ...] = ()
    #: Source address the REGISTER came from ("sip:1.2.3.4:5060;transport=udp"), for NAT.
    received: str | None = None
    transport: str = "udp"
    #: The local listener it arrived on ("udp:10.0.0.1:5060"), Kamailio's socket.
    socket: str | None = None
    #: The edge instance that owns the flow towards this contact.
    edge_id: str | None = None
    #: The flow (connection) at that edge (RFC 5626 flow token).
    flow_id: str | None = None
    #: +sip.instance (RFC 5626 §4.1), e.g. "<urn:uuid:...>".
    instance: str | None = None
    #: reg-id (RFC 5626 §4.2).
    reg_id: int | None = None
    user_agent: str = ""
    #: Kamailio's methods bitmask from the Allow header; None = unknown.
    methods: int | None = None
    flags: int = 0
    cflags: int = 0
    #: Epoch seconds of the last change (ordering among equal q, and the DB column).
    last_modified: float = 0.0
    #: Kamailio's record unique id (location.ruid), for persistence.
    ruid: str = ""
    #: Extra attributes a service wants to keep (JSON-serialisable values).
    attrs: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def to_dict(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies recursively and was ~15 % of
        # a split registrar's CPU (every REGISTER re-encodes the AOR's bindings).
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["path"] = list(self.path)
        data["attrs"] = copy.deepcopy(self.attrs) if self.attrs else {}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binding:
        values = {k: v for k, v in data.items() if k in _FIELD_SET}
        values["path"] = tuple(values.get("path") or ())
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Binding:
        return cls.from_dict(json.loads(text))


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Binding))
_FIELD_SET = frozenset(_FIELD_NAMES)


def sort_bindings(bindings: Sequence[Binding]) -> list[Binding]:
    """q descending (no q counts as 1.0, RFC 3261 §20.10), then most recently modified."""
    return sorted(
        bindings,
        key=lambda b: (-(1.0 if b.q is None else b.q), -b.last_modified, b.contact),
    )


#: The update function: gets the AOR's current live bindings, returns the new list.
#: It may be called more than once (optimistic retry) and must not have side effects.
UpdateFn = Callable[[list[Binding]], list[Binding]]


@runtime_checkable
class LocationStore(Protocol):
    """Async location store. Raises ``StateUnavailable`` when the backend is down."""

    @property
    def prefix(self) -> str: ...

    @property
    def healthy(self) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, aor: str) -> list[Binding]:
        """Live bindings of ``aor``, ordered by q desc, then last_modified desc."""
        ...

    async def get_many(self, aors: Sequence[str]) -> dict[str, list[Binding]]:
        """``get`` for several AORs in one round trip (router lookups per batch)."""
        ...

    async def update(self, aor: str, fn: UpdateFn) -> list[Binding]:
        """Atomically replace the live bindings of ``aor`` by ``fn(live bindings)``.

        Returns the new live bindings (sorted). Every binding returned by ``fn``
        must have ``aor == aor``. Expired bindings that ``fn`` does not replace (by
        contact) stay stored until a sweep reports them. Returning bindings already
        expired drops them. Raises ``StateConflict`` if concurrent writers keep
        winning beyond the retry bound, ``ValueError`` for a bad list.
        """
        ...

    async def remove(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor``; returns the live ones removed."""
        ...

    async def sweep(self, now: float | None = None) -> list[Binding]:
        """Remove bindings expired at ``now`` (default: the store clock) and return them.

        Safe with several concurrent sweepers: each expired binding is returned by
        exactly one of them.
        """
        ...

    async def list_aors(self) -> list[str]:
        """AORs with at least one live binding (sorted)."""
        ...

    async def count(self) -> int:
        """Number of live bindings (Kamailio's registered_contacts)."""
        ...


def apply_update(
    aor: str, stored: Sequence[Binding], fn: UpdateFn, now: float
) -> tuple[dict[str, Binding], list[Binding]]:
    """The update rule every LocationStore shares (pure: backends retry it freely).

    Returns (bindings to store keyed by contact, new live bindings sorted).
    """
    live = sort_bindings([b for b in stored if not b.expired(now)])
    new = list(fn(list(live)))
    contacts: set[str] = set()
    for b in new:
        if not isinstance(b, Binding):
            raise TypeError(f"update function returned {type(b).__name__}, not Binding")
        if b.aor != aor:
            raise ValueError(f"binding for {b.aor!r} in an update of {aor!r}")
        if b.contact in contacts:
            raise ValueError(f"two bindings for contact {b.contact!r}")
        contacts.add(b.contact)
    result = {b.contact: b for b in stored if b.expired(now) and b.contact not in contacts}
    new_live = [b for b in new if not b.expired(now)]
    result.update((b.contact, b) for b in new_live)
    return result, sort_bindings(new_live)
