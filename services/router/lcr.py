"""Least-cost routing over Kamailio's ``lcr_gw``, ``lcr_rule`` and ``lcr_rule_target``.

``load_gws(lcr_id, user, from_uri, ruri, method)`` finds the rules whose prefix is a
prefix of ``user`` (the R-URI user), whose ``from_uri`` / ``request_uri`` regular
expressions match (searched, case-insensitive, as Kamailio's regexec) and whose
``method`` list (a sipmesh column, ``INVITE|MESSAGE``; empty: any) holds the request
method. Their gateways are ordered as Kamailio orders them: longer matching prefix
first, then lower ``priority`` value, then by ``weight`` times a random number (so
weights share the traffic); a gateway reached through several rules keeps its best
place. A matching rule with ``stopper`` set ends the search at its prefix length.
Defunct gateways (``defunct`` a Unix time in the future) are left out; ``enabled=0``
rules are not loaded; ``mt_tvalue`` (mtree) is not supported.

The prefix index is a hash map per lcr_id from prefix to its rules plus the sorted
distinct prefix lengths, so a lookup costs one dict probe per distinct length (at
most the number length, typically 5 to 15 probes), never a scan of the rules, and
a million rules load in seconds (bench/bench_lcr.py).

``next_gw`` rewrites the R-URI Kamailio's way: user = gateway ``prefix`` +
user without its first ``strip`` characters; host = ``hostname`` or ``ip_addr``
(with both, the request is sent to ``ip_addr`` through ``$du``); ``port``,
``params``, ``uri_scheme`` (1 sip, 2 sips) and ``transport`` (1 udp, 2 tcp, 3 tls,
4 sctp) as given.
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sipmesh.state.db import Executor

_TRANSPORTS = {1: "udp", 2: "tcp", 3: "tls", 4: "sctp"}
_ANY: frozenset[str] = frozenset()


def _int(value: Any, default: int = 0) -> int:
    if type(value) is int:
        return value
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class LcrLoadError(ValueError):
    """A row cannot be used (bad regular expression); the reload is refused."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """One row of ``lcr_gw``."""

    id: int
    lcr_id: int
    name: str = ""
    ip_addr: str = ""
    hostname: str = ""
    port: int = 0
    params: str = ""
    uri_scheme: int = 1
    transport: int = 0
    strip: int = 0
    prefix: str = ""
    tag: str = ""
    flags: int = 0
    defunct: int = 0

    def target(self, user: str) -> tuple[str, str]:
        """(R-URI, $du) for a call to ``user`` through this gateway."""
        scheme = "sips" if self.uri_scheme == 2 else "sip"
        new_user = self.prefix + user[self.strip :]
        host = self.hostname or self.ip_addr
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        transport = _TRANSPORTS.get(self.transport)
        tparam = f";transport={transport}" if transport else ""
        params = (
            self.params if not self.params or self.params.startswith(";") else ";" + self.params
        )
        userpart = f"{new_user}@" if new_user else ""
        ruri = f"{scheme}:{userpart}{host}{port}{params}{tparam}"
        du = ""
        if self.hostname and self.ip_addr:
            ip = f"[{self.ip_addr}]" if ":" in self.ip_addr else self.ip_addr
            du = f"{scheme}:{ip}{port}{tparam}"
        return ruri, du


@dataclass(slots=True)
class Rule:
    """One enabled row of ``lcr_rule`` with its targets (gw_id, priority, weight).

    Not frozen only because a frozen dataclass's __init__ costs twice as much and a
    reload builds a million of them; nothing mutates a Rule after build_lcr.
    """

    id: int
    lcr_id: int
    prefix: str
    from_re: re.Pattern[str] | None = None
    ruri_re: re.Pattern[str] | None = None
    methods: frozenset[str] = frozenset()
    stopper: bool = False
    targets: tuple[tuple[int, int, int], ...] = ()

    def matches(self, from_uri: str, ruri: str, method: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        if self.from_re is not None and self.from_re.search(from_uri) is None:
            return False
        return self.ruri_re is None or self.ruri_re.search(ruri) is not None


@dataclass(frozen=True, slots=True)
class _Index:
    by_prefix: Mapping[str, tuple[Rule, ...]]
    lengths: tuple[int, ...]  # distinct prefix lengths, longest first


@dataclass(frozen=True, slots=True)
class Selected:
    """A gateway chosen by load_gws, with the rule that brought it."""

    gw: Gateway
    rule_id: int
    prefix_len: int
    priority: int


@dataclass(frozen=True)
class LcrTables:
    gateways: Mapping[int, Gateway] = field(default_factory=lambda: MappingProxyType({}))
    indexes: Mapping[int, _Index] = field(default_factory=lambda: MappingProxyType({}))
    rule_count: int = 0

    def load_gws(
        self,
        lcr_id: int,
        user: str,
        from_uri: str = "",
        ruri: str = "",
        method: str = "INVITE",
        *,
        rng: Callable[[], float] = random.random,
        now: float | None = None,
    ) -> list[Selected]:
        """The gateways to try for ``user``, best first ([] when no rule matches)."""
        index = self.indexes.get(lcr_id)
        if index is None:
            return []
        t = time.time() if now is None else now
        best: dict[int, tuple[tuple[int, int, float], Selected]] = {}
        n = len(user)
        for length in index.lengths:
            if length > n:
                continue
            rules = index.by_prefix.get(user[:length])
            if rules is None:
                continue
            stop = False
            for rule in rules:
                if not rule.matches(from_uri, ruri, method):
                    continue
                stop = stop or rule.stopper
                for gw_id, priority, weight in rule.targets:
                    if gw_id in best:
                        continue  # already reached through a longer prefix
                    gw = self.gateways.get(gw_id)
                    if gw is None or gw.defunct > t or weight <= 0:
                        continue
                    key = (-length, priority, -weight * rng())
                    best[gw_id] = (key, Selected(gw, rule.id, length, priority))
            if stop:
                break
        return [sel for _, sel in sorted(best.values(), key=lambda item: item[0])]


def _compile(pattern: str, cache: dict[str, re.Pattern[str]], what: str) -> re.Pattern[str]:
    compiled = cache.get(pattern)
    if compiled is None:
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise LcrLoadError(f"{what}: bad regular expression {pattern!r}: {exc}") from None
        cache[pattern] = compiled
    return compiled


def build_lcr(
    gw_rows: Iterable[Mapping[str, Any]],
    rule_rows: Iterable[Mapping[str, Any]],
    target_rows: Iterable[Mapping[str, Any]],
) -> LcrTables:
    """A snapshot from rows shaped like the three tables; raises LcrLoadError.

    The cyclic garbage collector is paused while the index is built: a million rules
    are millions of new containers, and collections triggered by them (finding no
    cycles) would cost more than the build itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build(gw_rows, rule_rows, target_rows)
    finally:
        if enabled:
            gc.enable()


def _build(
    gw_rows: Iterable[Mapping[str, Any]],
    rule_rows: Iterable[Mapping[str, Any]],
    target_rows: Iterable[Mapping[str, Any]],
) -> LcrTables:
    gateways: dict[int, Gateway] = {}
    for g in gw_rows:
        gw_id = _int(g.get("id"))
        gateways[gw_id] = Gateway(
            id=gw_id,
            lcr_id=_int(g.get("lcr_id")),
            name=_text(g.get("gw_name")),
            ip_addr=_text(g.get("ip_addr")),
            hostname=_text(g.get("hostname")),
            port=_int(g.get("port")),
            params=_text(g.get("params")),
            uri_scheme=_int(g.get("uri_scheme"), 1),
            transport=_int(g.get("transport")),
            strip=_int(g.get("strip")),
            prefix=_text(g.get("prefix")),
            tag=_text(g.get("tag")),
            flags=_int(g.get("flags")),
            defunct=_int(g.get("defunct")),
        )
    targets: dict[int, list[tuple[int, int, int]]] = {}
    for t in target_rows:
        targets.setdefault(_int(t.get("rule_id")), []).append(
            (_int(t.get("gw_id")), _int(t.get("priority")), _int(t.get("weight"), 1))
        )
    cache: dict[str, re.Pattern[str]] = {}
    grouped: dict[int, dict[str, list[Rule]]] = {}
    count = 0
    for r in rule_rows:
        if not _int(r.get("enabled"), 1):
            continue
        rule_id = _int(r.get("id"))
        from_uri = _text(r.get("from_uri"))
        request_uri = _text(r.get("request_uri"))
        method = _text(r.get("method")).upper()
        rule = Rule(
            id=rule_id,
            lcr_id=_int(r.get("lcr_id")),
            prefix=_text(r.get("prefix")),
            from_re=_compile(from_uri, cache, f"lcr_rule {rule_id} from_uri") if from_uri else None,
            ruri_re=(
                _compile(request_uri, cache, f"lcr_rule {rule_id} request_uri")
                if request_uri
                else None
            ),
            methods=frozenset(m for m in re.split(r"[|,\s]+", method) if m) if method else _ANY,
            stopper=bool(_int(r.get("stopper"))),
            targets=tuple(targets.get(rule_id, ())),
        )
        grouped.setdefault(rule.lcr_id, {}).setdefault(rule.prefix, []).append(rule)
        count += 1
    indexes = {
        lcr_id: _Index(
            {p: tuple(rules) for p, rules in by_prefix.items()},
            tuple(sorted({len(p) for p in by_prefix}, reverse=True)),
        )
        for lcr_id, by_prefix in grouped.items()
    }
    return LcrTables(MappingProxyType(gateways), MappingProxyType(indexes), count)


async def load_lcr(db: Executor) -> LcrTables:
    gws = await db.fetch(
        "SELECT id, lcr_id, gw_name, ip_addr, hostname, port, params, uri_scheme, transport, "
        "strip, prefix, tag, flags, defunct FROM lcr_gw"
    )
    rules = await db.fetch(
        "SELECT id, lcr_id, prefix, from_uri, request_uri, method, stopper, enabled "
        "FROM lcr_rule WHERE enabled <> 0"
    )
    targets = await db.fetch("SELECT rule_id, gw_id, priority, weight FROM lcr_rule_target")
    # A million rules take seconds to index: in a worker thread the event loop keeps
    # routing with the old snapshot meanwhile.
    return await asyncio.to_thread(build_lcr, gws, rules, targets)
