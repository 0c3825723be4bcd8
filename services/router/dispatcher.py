"""Kamailio's dispatcher: destination sets, selection algorithms, shared states.

Sets come from the ``dispatcher`` table (setid, destination, flags, priority,
attrs ``weight=…;duid=…;maxload=…;socket=…``) as an immutable snapshot swapped on
reload. Within a set destinations are ordered by priority, highest first, as
Kamailio orders them. Algorithms keep Kamailio's numbers:

0 hash Call-ID · 1 hash From URI · 2 hash To URI · 3 hash R-URI · 4 round-robin ·
5 hash auth username · 6 random · 7 hash of a given key (Kamailio's ``$var``
hashing; the facet passes the R-URI user by default) · 8 priority order ·
9 weight · 10 call load (fewest active calls, ``maxload``) · 12 all (parallel).

A selection returns the chosen destination followed by the other usable ones in
failover order (``ds.next()`` walks them, Kamailio's ds_next_dst). Hashing is over
all destinations of the set (``crc32 % n``, stable across router instances); when
the hashed one is not usable the next usable one in set order is taken, so the
other keys keep their destination.

Destination states are shared by every router instance through the KV store
(``ds:state:<setid>:<destination>``, values ``AP``/``IP``/``TP``/``DX`` as shown by
kamcmd dispatcher.list, the layout the admin API reads and writes). Each instance
keeps them in memory, re-reads them every ``router.ds_state_refresh`` seconds and at
once when another instance announces a change on the bus (``dispatcher.state``) or
the admin API's audit event says an operator set one (``dispatcher.set_state``), so
the hot path never waits for the store (DESIGN.md, Performance). Without a stored
entry a destination is in the state its ``flags`` column gives (1 inactive,
4 disabled, 8 probing).
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import gcd
from types import MappingProxyType
from typing import Any

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.state.bus import EventBus, Message, Subscription
from sipmesh.state.db import Executor
from sipmesh.state.kv import KVStore

log = logging.getLogger("sipmesh.router.dispatcher")

ALG_HASH_CALLID = 0
ALG_HASH_FROM = 1
ALG_HASH_TO = 2
ALG_HASH_RURI = 3
ALG_ROUND_ROBIN = 4
ALG_HASH_AUTH = 5
ALG_RANDOM = 6
ALG_HASH_KEY = 7
ALG_PRIORITY = 8
ALG_WEIGHT = 9
ALG_CALL_LOAD = 10
ALG_ALL = 12
ALGORITHMS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12})

# Kamailio's destination flag bits (dispatch.h).
FLAG_INACTIVE = 1
FLAG_TRYING = 2
FLAG_DISABLED = 4
FLAG_PROBING = 8

STATE_KEY = "ds:state:"
STATE_SUBJECT = "dispatcher.state"
# The admin API writes an operator's ``dispatcher set-state`` straight to the KV store
# and announces it only as an audit event: its subject as published today, and the
# one events.proto documents. Either makes every instance re-read the states at once.
AUDIT_SUBJECTS = ("audit.admin", "sipmesh.audit.admin")
AUDIT_SET_STATE = "dispatcher.set_state"
# What a script or an operator may write, mapped to the stored two letters.
_STATE_WORDS = {
    "a": "AP",
    "active": "AP",
    "ap": "AP",
    "ax": "AP",
    "i": "IP",
    "inactive": "IP",
    "ip": "IP",
    "ix": "IP",
    "t": "TP",
    "trying": "TP",
    "tp": "TP",
    "tx": "TP",
    "d": "DX",
    "disabled": "DX",
    "dx": "DX",
    "dp": "DX",
    "p": "IP",
    "probing": "IP",
}


def normalise_state(state: str) -> str:
    """Kamailio's ds.set_state letters (``a``, ``ip``, ``d`` …) or words → AP/IP/TP/DX."""
    try:
        return _STATE_WORDS[state.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown dispatcher state {state!r}: active, inactive, trying, disabled"
        ) from None


def state_from_flags(flags: int) -> str:
    if flags & FLAG_DISABLED:
        return "DX"
    if flags & FLAG_INACTIVE:
        return "IP"
    if flags & FLAG_TRYING:
        return "TP"
    return "AP"


def usable(state: str) -> bool:
    """Active and trying destinations are selected; inactive and disabled ones skipped."""
    return state[:1] in ("A", "T")


def parse_attrs(text: str) -> dict[str, str]:
    """``weight=50;duid=media1;maxload=20;socket=udp:10.0.0.1:5060`` → dict."""
    out: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            out[name.strip().lower()] = value.strip()
    return out


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class Destination:
    """One row of the ``dispatcher`` table."""

    setid: int
    uri: str
    flags: int = 0
    priority: int = 0
    attrs: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def key(self) -> tuple[int, str]:
        return (self.setid, self.uri)

    @property
    def weight(self) -> int:
        return max(0, _int(self.attrs.get("weight"), 1))

    @property
    def duid(self) -> str:
        return self.attrs.get("duid", "")

    @property
    def maxload(self) -> int:
        return max(0, _int(self.attrs.get("maxload"), 0))

    @property
    def socket(self) -> str:
        return self.attrs.get("socket", "")


def _weight_cycle(dests: Sequence[Destination]) -> tuple[int, ...]:
    """Indexes in the order weighted selection visits them (smooth weighted round-robin).

    Kamailio fills a 100-slot table from the weights; a precomputed smooth cycle has
    the same proportions and spreads each destination's turns evenly.
    """
    weights = [d.weight for d in dests]
    if not any(weights):
        weights = [1] * len(dests)
    divisor = 0
    for w in weights:
        divisor = gcd(divisor, w)
    weights = [w // divisor for w in weights]
    total = sum(weights)
    if total > 1000:  # keep the cycle small: scale to per-mille
        weights = [max(1, round(w * 1000 / total)) if w else 0 for w in weights]
        total = sum(weights)
    current = [0] * len(weights)
    cycle: list[int] = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        cycle.append(best)
    return tuple(cycle)


@dataclass(frozen=True)
class DispatcherTables:
    sets: Mapping[int, tuple[Destination, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    weight_cycles: Mapping[int, tuple[int, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def destinations(self) -> Iterable[Destination]:
        for dests in self.sets.values():
            yield from dests

    def find(self, setid: int, uri: str) -> Destination | None:
        for d in self.sets.get(setid, ()):
            if d.uri == uri:
                return d
        return None


def build_dispatcher(rows: Iterable[Mapping[str, Any]]) -> DispatcherTables:
    """A snapshot from rows shaped like the table; rows without destination are skipped."""
    grouped: dict[int, list[tuple[int, int, Destination]]] = {}
    for n, row in enumerate(rows):
        uri = str(row.get("destination") or "").strip()
        if not uri:
            continue
        dest = Destination(
            setid=_int(row.get("setid")),
            uri=uri,
            flags=_int(row.get("flags")),
            priority=_int(row.get("priority")),
            attrs=MappingProxyType(parse_attrs(str(row.get("attrs") or ""))),
            description=str(row.get("description") or ""),
        )
        grouped.setdefault(dest.setid, []).append((-dest.priority, _int(row.get("id"), n), dest))
    sets = {sid: tuple(d for _, _, d in sorted(items)) for sid, items in grouped.items()}
    cycles = {sid: _weight_cycle(dests) for sid, dests in sets.items()}
    return DispatcherTables(MappingProxyType(sets), MappingProxyType(cycles))


async def load_dispatcher(db: Executor) -> DispatcherTables:
    rows = await db.fetch(
        "SELECT id, setid, destination, flags, priority, attrs, description FROM dispatcher"
    )
    return build_dispatcher(rows)


def _hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogateescape"))


def uri_hash_key(uri: str) -> str:
    """What Kamailio hashes of a URI: ``user@host:port`` (no scheme, params, brackets)."""
    text = uri.strip()
    if "<" in text:
        text = text.split("<", 1)[1].split(">", 1)[0]
    _, sep, rest = text.partition(":")
    if sep and "@" not in _ and not _.isdigit():
        text = rest
    for stop in (";", "?"):
        text = text.split(stop, 1)[0]
    return text.lower()


@dataclass(frozen=True, slots=True)
class SelectKeys:
    """The request facts the hashing algorithms use."""

    call_id: str = ""
    from_uri: str = ""
    to_uri: str = ""
    ruri: str = ""
    auth_user: str = ""
    key: str = ""


@dataclass
class _Call:
    key: tuple[int, str]
    since: float


class Dispatcher:
    """The live dispatcher of one router instance: tables, states, counters, call load."""

    def __init__(
        self,
        kv: KVStore | None = None,
        bus: EventBus | None = None,
        *,
        instance_id: str = "router",
        state_refresh: float = 5.0,
        call_lifetime: float = 7200.0,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._kv = kv
        self._bus = bus
        self._instance = instance_id
        self._refresh_every = state_refresh
        self._call_lifetime = call_lifetime
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._rng = rng or random.Random()
        self.tables = DispatcherTables()
        self._states: dict[tuple[int, str], str] = {}
        self._rr: dict[int, int] = {}
        self._wrr: dict[int, int] = {}
        self._load: dict[tuple[int, str], int] = {}
        self._calls: dict[str, _Call] = {}
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- tables and states ---------------------------------------------------------

    def set_tables(self, tables: DispatcherTables) -> None:
        """Swap the snapshot (reload). States of destinations still present are kept."""
        keys = {d.key for d in tables.destinations()}
        self.tables = tables
        self._states = {k: v for k, v in self._states.items() if k in keys}

    def state(self, dest: Destination) -> str:
        return self._states.get(dest.key) or state_from_flags(dest.flags)

    def state_of(self, setid: int, uri: str) -> str | None:
        dest = self.tables.find(setid, uri)
        return None if dest is None else self.state(dest)

    def states(self) -> dict[tuple[int, str], str]:
        return {d.key: self.state(d) for d in self.tables.destinations()}

    def apply_state(self, setid: int, uri: str, state: str) -> None:
        """Set a state in this instance's memory only (the prober, a bus notice)."""
        self._states[(setid, uri)] = state

    async def set_state(self, setid: int, uri: str, state: str) -> None:
        """ds.set_state: store for every instance, apply here, tell the others."""
        value = normalise_state(state)
        if self.tables.find(setid, uri) is None:
            raise KeyError(f"no destination {uri} in set {setid}")
        self.apply_state(setid, uri, value)
        if self._kv is not None:
            await self._kv.set(f"{STATE_KEY}{setid}:{uri}", value.encode())
        await self.announce()

    def set_state_soon(self, setid: int, uri: str, state: str) -> None:
        """set_state without waiting (ds_mark_dst in a route: never block the decision)."""
        self.apply_state(setid, uri, normalise_state(state))
        task = asyncio.ensure_future(self._store_quietly(setid, uri, state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_quietly(self, setid: int, uri: str, state: str) -> None:
        try:
            await self.set_state(setid, uri, state)
        except Exception as exc:
            log.debug("dispatcher: storing state of %s failed: %s", uri, exc)

    async def announce(self) -> None:
        if self._bus is not None:
            try:
                await self._bus.publish(STATE_SUBJECT, self._instance.encode())
            except Exception as exc:
                log.debug("dispatcher: state announce failed: %s", exc)

    async def refresh_states(self) -> None:
        """Re-read every destination's stored state in one round trip."""
        if self._kv is None:
            return
        dests = list(self.tables.destinations())
        if not dests:
            return
        values = await self._kv.get_many([f"{STATE_KEY}{d.setid}:{d.uri}" for d in dests])
        fresh: dict[tuple[int, str], str] = {}
        for dest, raw in zip(dests, values, strict=True):
            if raw:
                try:
                    fresh[dest.key] = normalise_state(raw.decode())
                except ValueError:
                    continue
        self._states = fresh

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._bus is not None:
            self._subs.append(await self._bus.subscribe(STATE_SUBJECT, self._on_state))
            for subject in ("sipmesh.transaction.INVITE", "sipmesh.transaction.BYE"):
                self._subs.append(await self._bus.subscribe(subject, self._on_call_event))
            self._subs.append(await self._bus.subscribe("sipmesh.dialog.end", self._on_call_event))
            for subject in AUDIT_SUBJECTS:
                self._subs.append(await self._bus.subscribe(subject, self._on_audit))
        try:
            await self.refresh_states()
        except Exception as exc:
            log.warning("dispatcher: states not readable yet: %s", exc)
        self._task = asyncio.create_task(self._refresh_loop(), name="dispatcher-states")

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_every)
            try:
                await self.refresh_states()
            except Exception as exc:  # the store is down: keep what we have
                log.debug("dispatcher: state refresh failed: %s", exc)
            self._sweep_calls()

    async def _on_state(self, message: Message) -> None:
        if message.data.decode(errors="replace") == self._instance:
            return
        try:
            await self.refresh_states()
        except Exception as exc:
            log.debug("dispatcher: state refresh failed: %s", exc)

    async def _on_audit(self, message: Message) -> None:
        env = events_pb2.Envelope()
        try:
            env.ParseFromString(message.data)
        except Exception:
            return
        if env.WhichOneof("event") != "audit":
            return
        if env.audit.operation == AUDIT_SET_STATE and env.audit.ok:
            try:
                await self.refresh_states()
            except Exception as exc:
                log.debug("dispatcher: state refresh failed: %s", exc)

    # -- call load (algorithm 10) ------------------------------------------------------

    def load(self, setid: int, uri: str) -> int:
        return self._load.get((setid, uri), 0)

    def call_started(self, call_id: str, dest: Destination) -> None:
        """Count a call on ``dest`` (moving it when the call fails over)."""
        self.call_ended(call_id)
        self._calls[call_id] = _Call(dest.key, self._clock())
        self._load[dest.key] = self._load.get(dest.key, 0) + 1

    def call_ended(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None:
            left = self._load.get(call.key, 0) - 1
            if left > 0:
                self._load[call.key] = left
            else:
                self._load.pop(call.key, None)

    def _sweep_calls(self) -> None:
        """Forget calls whose end we never heard of (lost events), like dialog timeouts."""
        limit = self._clock() - self._call_lifetime
        for call_id in [c for c, call in self._calls.items() if call.since < limit]:
            self.call_ended(call_id)

    async def _on_call_event(self, message: Message) -> None:
        env = events_pb2.Envelope()
        try:
            env.ParseFromString(message.data)
        except Exception:
            return
        kind = env.WhichOneof("event")
        if kind == "transaction":
            tx = env.transaction
            # A failed INVITE ends the call; a BYE (any answer) ends it too.
            if tx.method == "BYE" or (tx.method == "INVITE" and tx.status >= 300):
                self.call_ended(tx.call_id)
        elif kind == "dialog" and env.dialog.state == events_pb2.DialogEvent.STATE_END:
            self.call_ended(env.dialog.call_id)

    # -- selection ---------------------------------------------------------------------

    def select(
        self, setid: int, alg: int, keys: SelectKeys = SelectKeys(), limit: int = 0
    ) -> list[Destination]:
        """The destinations to try, chosen one first; [] when none is usable."""
        if alg not in ALGORITHMS:
            raise ValueError(f"dispatcher algorithm {alg} is not supported")
        dests = self.tables.sets.get(setid, ())
        n = len(dests)
        if not n:
            return []
        ok = [usable(self.state(d)) for d in dests]
        if not any(ok):
            return []
        start: int
        if alg in (ALG_HASH_CALLID, ALG_HASH_FROM, ALG_HASH_TO, ALG_HASH_RURI, ALG_HASH_KEY):
            text = {
                ALG_HASH_CALLID: keys.call_id,
                ALG_HASH_FROM: uri_hash_key(keys.from_uri),
                ALG_HASH_TO: uri_hash_key(keys.to_uri),
                ALG_HASH_RURI: uri_hash_key(keys.ruri),
                ALG_HASH_KEY: keys.key,
            }[alg]
            start = _hash(text) % n
        elif alg == ALG_HASH_AUTH:
            # Kamailio: without an authorization username, round-robin.
            start = _hash(keys.auth_user) % n if keys.auth_user else self._next_rr(setid, n)
        elif alg == ALG_ROUND_ROBIN:
            start = self._next_rr(setid, n)
            # Kamailio's counter moves on past unusable entries.
            while not ok[start]:
                start = self._next_rr(setid, n)
        elif alg == ALG_RANDOM:
            usable_idx = [i for i in range(n) if ok[i]]
            start = usable_idx[self._rng.randrange(len(usable_idx))]
        elif alg == ALG_WEIGHT:
            start = self._next_weighted(setid, dests, ok)
        elif alg == ALG_CALL_LOAD:
            return self._by_load(dests, ok, limit)
        else:  # priority order, and "all"
            start = 0
        order = [dests[(start + i) % n] for i in range(n) if ok[(start + i) % n]]
        return order[:limit] if limit > 0 else order

    def _next_rr(self, setid: int, n: int) -> int:
        value = self._rr.get(setid, -1) + 1
        self._rr[setid] = value % n
        return value % n

    def _next_weighted(self, setid: int, dests: Sequence[Destination], ok: list[bool]) -> int:
        cycle = self.tables.weight_cycles.get(setid) or tuple(range(len(dests)))
        for _ in range(len(cycle)):
            pos = self._wrr.get(setid, -1) + 1
            self._wrr[setid] = pos % len(cycle)
            index = cycle[pos % len(cycle)]
            if ok[index] and dests[index].weight > 0:
                return index
        return next(i for i, good in enumerate(ok) if good)

    def _by_load(
        self, dests: Sequence[Destination], ok: list[bool], limit: int
    ) -> list[Destination]:
        candidates = [
            (self.load(d.setid, d.uri), i, d)
            for i, d in enumerate(dests)
            if ok[i] and (not d.maxload or self.load(d.setid, d.uri) < d.maxload)
        ]
        order = [d for _, _, d in sorted(candidates, key=lambda c: (c[0], c[1]))]
        return order[:limit] if limit > 0 else order

    def is_from_list(self, host: str, port: int, setid: int = -1) -> int | None:
        """ds_is_from_list: the set of the destination at ``host:port`` (port 0: any)."""
        for sid, dests in self.tables.sets.items():
            if setid >= 0 and sid != setid:
                continue
            for d in dests:
                h, p = host_port(d.uri)
                if h == host.lower().strip("[]") and (not port or p == port):
                    return sid
        return None


def host_port(uri: str) -> tuple[str, int]:
    """Host and port of a destination URI (port 5060 when absent; 5061 for sips)."""
    text = uri.strip()
    scheme, _, rest = text.partition(":")
    default = 5061 if scheme.lower() == "sips" else 5060
    hostport = rest.split(";", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = _int(tail.lstrip(":"), default) if tail else default
        return host.lower(), port
    host, sep, port_text = hostport.partition(":")
    return host.lower(), _int(port_text, default) if sep else default
