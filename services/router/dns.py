"""RFC 3263 next-hop resolution (NAPTR → SRV → A/AAAA) for SIPOUT, with dnspython.

``DnsResolver.resolve(uri)`` returns every hop to try, in order, so that the edge
can fail over from one to the next (RFC 3263 §4.3); the default script relays to
them as serial-forking groups, one hop per group. Resolution follows RFC 3263 §4:

- §4.1 transport: the ``transport`` parameter; else for an IP literal or a name
  with a port, UDP (``sip:``) or TLS (``sips:``); else NAPTR records whose service
  we support (SIP+D2U/D2T/D2S, SIPS+D2T, and SIP(S)+D2W of RFC 7118), by order and
  preference; without usable NAPTR records the ``_sip._udp``/``_sip._tcp``/
  ``_sip._sctp`` (``sip:``) or ``_sips._tcp`` (``sips:``) SRV records; without those
  A/AAAA with UDP (``sip:``) or TLS (``sips:``).
- §4.2 port and address: an IP literal is used as is, a name with a port goes
  straight to A/AAAA, otherwise SRV (RFC 2782 order: priority, then weighted
  random), then A/AAAA of each SRV target; no SRV record: A/AAAA of the name with
  the default port (5060, 5061 for TLS).

Failures map to the SIP status of ``ResolveError`` (documented in docs/routing.md,
SIPOUT): 404 when the name or its records do not exist (NXDOMAIN/NODATA at every
step, or an SRV target "." — RFC 2782's "decidedly not available"), 503 when DNS
answers with an error (SERVFAIL, REFUSED, unreachable server), 408 when no answer
came within ``lifetime``. A resolution that found at least one address returns it,
whatever failed elsewhere.

Record sets are cached per (name, type) for their TTL, and negative answers for the
SOA's negative TTL (RFC 2308 §5); server failures and timeouts are never cached.
Concurrent lookups of the same record set share one query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from prometheus_client import CollectorRegistry, Counter

from sipmesh.router.resolve import Hop, ResolveError
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.sip import ParseError, SipURI, parse_uri

log = logging.getLogger("sipmesh.router.dns")

TRANSPORTS = ("udp", "tcp", "tls", "sctp", "ws", "wss")

# RFC 3263 §4.1 (and RFC 4168 for SCTP, RFC 7118 for WebSocket): NAPTR service → transport.
NAPTR_SERVICES = {
    "SIP+D2U": "udp",
    "SIP+D2T": "tcp",
    "SIP+D2S": "sctp",
    "SIPS+D2T": "tls",
    "SIP+D2W": "ws",
    "SIPS+D2W": "wss",
}

# SRV owner prefixes for the no-NAPTR case (RFC 3263 §4.1): "_sip" for sip: URIs and
# "_sips" for sips: URIs; RFC 7118 defines no SRV names for WebSocket.
_SRV_PREFIX = {
    ("udp", False): "_sip._udp",
    ("tcp", False): "_sip._tcp",
    ("sctp", False): "_sip._sctp",
    ("tls", True): "_sips._tcp",
}

# Below this much time left a query is not worth sending: the resolution has timed out.
_MIN_QUERY_TIME = 0.005

RdataType = dns.rdatatype.RdataType
_NAPTR = RdataType.NAPTR
_SRV = RdataType.SRV
_A = RdataType.A
_AAAA = RdataType.AAAA


def default_port(transport: str) -> int:
    """RFC 3261 §19.1.2: 5060, 5061 for TLS (and secure WebSocket)."""
    return 5061 if transport in ("tls", "wss") else 5060


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record (RFC 2782); ``target`` without the final dot, "." for none."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 target selection: ascending priority, weighted random within a priority.

    Within one priority, zero-weight records go first, a random number in
    [0, sum of weights] is drawn and the first record whose running weight sum
    reaches it is taken; repeated until every record is placed. Zero-weight records
    thus keep a small chance to come first, as RFC 2782 specifies.
    """
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        group.sort(key=lambda r: r.weight != 0)  # stable: zero weights at the front
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


@dataclass(frozen=True, slots=True)
class Lookup:
    """The cached outcome of one DNS query: records, or why there are none."""

    kind: str  # "ok", "nxdomain" (no such name) or "nodata" (no record of this type)
    records: tuple[Any, ...] = ()


class TtlCache:
    """Bounded LRU map whose entries expire; ``clock`` is monotonic seconds."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[tuple[str, int], tuple[float, Lookup]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: tuple[str, int]) -> Lookup | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[str, int], value: Lookup, ttl: float) -> None:
        if self._max <= 0 or ttl <= 0:
            return
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)


@dataclass(frozen=True)
class DnsSettings:
    """What the router configuration says about RFC 3263 resolution."""

    # (address, port) of the DNS servers; empty: the system's /etc/resolv.conf.
    servers: tuple[tuple[str, int], ...] = ()
    # Seconds one server has to answer one query before it is asked again / the next one.
    timeout: float = 0.4
    # Seconds one whole resolution (every query it needs) may take.
    lifetime: float = 0.7
    cache_size: int = 4096
    prefer_ipv6: bool = False
    # Transports we can send over, in order of preference (no-NAPTR SRV order).
    transports: tuple[str, ...] = ("udp", "tcp", "tls")
    max_hops: int = 8
    max_ttl: float = 3600.0
    max_negative_ttl: float = 300.0


def parse_server(text: str) -> tuple[str, int]:
    """ "192.0.2.53", "192.0.2.53:5353", "2001:db8::53" or "[2001:db8::53]:5353"."""
    value = text.strip()
    host, port = value, 53
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"DNS server {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"DNS server {text!r}: expected ':port' after ']'")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"DNS server {text!r}: not an IP address") from None
    if not 0 < port < 65536:
        raise ValueError(f"DNS server {text!r}: bad port")
    return address, port


def settings_from_config(config: SipmeshConfig) -> DnsSettings:
    """DnsSettings from ``router.dns_*`` (and ``listen`` when no transports are given).

    The lifetime is capped below the script's time budget so that a DNS server that
    does not answer ends in the script's 408, not in the runner's 500 for a script
    that overran its budget.
    """
    router = config.router
    transports: tuple[str, ...] = tuple(router.dns_transports)
    if not transports:
        listened = {item.split(":", 1)[0].lower() for item in config.listen}
        # Only what an edge can open towards a foreign server: no outgoing WebSocket.
        transports = tuple(t for t in ("udp", "tcp", "tls", "sctp") if t in listened)
    lifetime = min(router.dns_lifetime, 0.8 * router.script_timeout)
    return DnsSettings(
        servers=tuple(parse_server(s) for s in router.dns_servers),
        timeout=min(router.dns_timeout, lifetime),
        lifetime=lifetime,
        cache_size=router.dns_cache_size,
        prefer_ipv6=router.prefer_ipv6,
        transports=transports or ("udp", "tcp"),
    )


class _DnsFailure(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "timeout" or "error"


@dataclass
class _Run:
    """One resolution: its deadline and what went wrong along the way."""

    deadline: float
    failures: set[str] = field(default_factory=set)
    details: list[str] = field(default_factory=list)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "sipmesh_dns_queries",
            "DNS queries sent for RFC 3263 resolution",
            ["type", "result"],
            registry=registry,
        )
        self.cache = Counter(
            "sipmesh_dns_cache_lookups",
            "DNS record-set cache lookups",
            ["result"],
            registry=registry,
        )
        # Kamailio's core statistic of the same name, labelled by the SIP status given.
        self.failed = Counter(
            "sipmesh_failed_dns_request",
            "RFC 3263 resolutions that found no hop",
            ["status"],
            registry=registry,
        )


class DnsResolver:
    """The router's RFC 3263 ``Resolver`` (see the module docstring)."""

    def __init__(
        self,
        settings: DnsSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        registry: CollectorRegistry | None = None,
        stub: dns.asyncresolver.Resolver | None = None,
    ) -> None:
        unknown = [t for t in settings.transports if t not in TRANSPORTS]
        if unknown or not settings.transports:
            raise ValueError(f"transports must be among {TRANSPORTS}, got {settings.transports}")
        self.settings = settings
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._metrics = _Metrics(registry if registry is not None else CollectorRegistry())
        self._cache = TtlCache(settings.cache_size, clock)
        self._inflight: dict[tuple[str, int], asyncio.Task[Lookup]] = {}
        self._stub = stub if stub is not None else _stub_resolver(settings)

    @property
    def cache(self) -> TtlCache:
        return self._cache

    # -- the Resolver interface ------------------------------------------------------

    async def resolve(self, uri: str) -> list[Hop]:
        """Hops for ``uri`` in the order to try them; ResolveError(404/408/503/416)."""
        try:
            parsed = parse_uri(uri)
        except ParseError as exc:
            raise ResolveError(416, f"cannot resolve {uri!r}: {exc}") from None
        if not isinstance(parsed, SipURI):
            raise ResolveError(416, f"cannot resolve a non-SIP URI {uri!r}")
        secure = parsed.secure
        target = (parsed.maddr or parsed.host).strip("[]").rstrip(".").lower()
        explicit = self._explicit_transport(parsed)
        literal = _ip_literal(target)
        if literal is not None or parsed.port:
            # §4.1/§4.2: an IP literal or an explicit port means no NAPTR and no SRV.
            transport = explicit or (self._secure_fallback() if secure else self._plain_fallback())
            port = parsed.port or default_port(transport)
            if literal is not None:
                return [Hop(transport, literal, port)]
            run = _Run(self._clock() + self.settings.lifetime)
            return self._finish(run, await self._addresses(run, target, transport, port), uri)
        run = _Run(self._clock() + self.settings.lifetime)
        hops = await self._resolve_name(run, target, secure, explicit)
        return self._finish(run, hops, uri)

    # -- §4.1 transport selection -----------------------------------------------------

    def _explicit_transport(self, uri: SipURI) -> str | None:
        name = (uri.transport or "").lower()
        if not name:
            return None
        if uri.secure:
            # A sips: URI always means TLS (RFC 3261 §26.2.2): over TCP, or secure
            # WebSocket; ";transport=udp" cannot be secured and is read as TLS.
            if name == "sctp":
                raise ResolveError(503, f"TLS over SCTP for {str(uri)!r} is not supported")
            name = "wss" if name in ("ws", "wss") else "tls"
        if name not in TRANSPORTS or name not in self.settings.transports:
            raise ResolveError(503, f"transport {name!r} of {str(uri)!r} is not enabled")
        return name

    def _plain_fallback(self) -> str:
        """The transport for a sip: URI without NAPTR/SRV: UDP, else TCP, else TLS."""
        for name in ("udp", "tcp", "tls", "sctp"):
            if name in self.settings.transports:
                return name
        raise ResolveError(503, "no transport enabled for sip: URIs")

    def _secure_fallback(self) -> str:
        if "tls" not in self.settings.transports:
            raise ResolveError(503, "TLS is not enabled: cannot reach a sips: URI")
        return "tls"

    def _naptr_candidates(self, records: tuple[Any, ...], secure: bool) -> list[tuple[str, str]]:
        """(transport, SRV name) of the NAPTR records we can use, best first.

        RFC 3263 §4.1: only records with flag "s" (the replacement is an SRV name)
        and no regexp; services we do not support are discarded, and so is every
        non-SIPS service for a sips: URI. Records sort by order, then preference.
        """
        usable: list[tuple[int, int, str, str]] = []
        for rd in records:
            service = rd.service.decode("ascii", "replace").upper()
            transport = NAPTR_SERVICES.get(service)
            if transport is None or transport not in self.settings.transports:
                continue
            if secure and not service.startswith("SIPS+"):
                continue
            if rd.flags.lower() != b"s" or rd.regexp or rd.replacement == dns.name.root:
                continue
            replacement = rd.replacement.to_text(omit_final_dot=True).lower()
            usable.append((rd.order, rd.preference, transport, replacement))
        usable.sort(key=lambda u: (u[0], u[1]))
        seen: set[tuple[str, str]] = set()
        out: list[tuple[str, str]] = []
        for _order, _pref, transport, replacement in usable:
            if (transport, replacement) not in seen:
                seen.add((transport, replacement))
                out.append((transport, replacement))
        return out

    def _default_srv(self, target: str, secure: bool) -> list[tuple[str, str]]:
        """No usable NAPTR: the SRV names of the transports we support (§4.1)."""
        out = []
        for transport in self.settings.transports:
            prefix = _SRV_PREFIX.get((transport, secure))
            if prefix is not None:
                out.append((transport, f"{prefix}.{target}"))
        return out

    async def _resolve_name(
        self, run: _Run, target: str, secure: bool, explicit: str | None
    ) -> list[Hop]:
        if explicit is not None:
            # §4.1: the transport is known; §4.2: SRV for it, if it has an SRV name.
            prefix = _SRV_PREFIX.get((explicit, secure))
            candidates = [(explicit, f"{prefix}.{target}")] if prefix else []
            fallback = explicit
        else:
            naptr = await self._lookup(run, target, _NAPTR)
            if naptr is not None and naptr.kind == "nxdomain":
                return []  # the domain does not exist: no SRV or A/AAAA can either
            candidates = self._naptr_candidates(naptr.records if naptr else (), secure)
            if candidates:
                fallback = candidates[0][0]
            else:
                candidates = self._default_srv(target, secure)
                fallback = self._secure_fallback() if secure else self._plain_fallback()
        answers = await asyncio.gather(*(self._lookup(run, name, _SRV) for _, name in candidates))
        # (transport, host, port) in the order to try, across every candidate.
        wanted: list[tuple[str, str, int]] = []
        srv_failed = False
        for (transport, _name), answer in zip(candidates, answers, strict=True):
            if answer is None:
                srv_failed = True
                continue
            records = [
                SrvRecord(rd.priority, rd.weight, rd.port, _host(rd.target))
                for rd in answer.records
            ]
            for record in order_srv(records, self._rng):
                if record.target != ".":
                    wanted.append((transport, record.target, record.port))
        if not wanted:
            if srv_failed:
                return []  # we cannot know there is no SRV record: no guessing from A
            if any(a is not None and a.records for a in answers):
                # Only "." targets: the service is decidedly not available (RFC 2782).
                run.details.append("SRV target '.': service not available")
                return []
            # §4.2: no SRV records: A/AAAA of the name, default port of the transport.
            return await self._addresses(run, target, fallback, default_port(fallback))
        per_target = await asyncio.gather(
            *(self._addresses(run, host, transport, port) for transport, host, port in wanted)
        )
        hops: list[Hop] = []
        for group in per_target:
            for hop in group:
                if hop not in hops:
                    hops.append(hop)
        return hops

    # -- §4.2 addresses ---------------------------------------------------------------

    async def _addresses(self, run: _Run, host: str, transport: str, port: int) -> list[Hop]:
        literal = _ip_literal(host)
        if literal is not None:  # an SRV target should be a name, but tolerate an IP
            return [Hop(transport, literal, port)]
        families = (_AAAA, _A) if self.settings.prefer_ipv6 else (_A, _AAAA)
        answers = await asyncio.gather(*(self._lookup(run, host, f) for f in families))
        return [
            Hop(transport, str(rd.address), port)
            for answer in answers
            if answer is not None
            for rd in answer.records
        ]

    def _finish(self, run: _Run, hops: list[Hop], uri: str) -> list[Hop]:
        if hops:
            return hops[: self.settings.max_hops]
        detail = "; ".join(run.details) or "no records"
        if "timeout" in run.failures:
            status, message = 408, f"DNS did not answer in time for {uri!r}: {detail}"
        elif "error" in run.failures:
            status, message = 503, f"DNS failure for {uri!r}: {detail}"
        else:
            status, message = 404, f"{uri!r} does not resolve: {detail}"
        self._metrics.failed.labels(str(status)).inc()
        log.debug("resolve: %s", message)
        raise ResolveError(status, message)

    # -- queries, cache, single flight ---------------------------------------------------

    async def _lookup(self, run: _Run, name: str, rdtype: RdataType) -> Lookup | None:
        """The records of (name, type), or None after a failure (noted in ``run``)."""
        key = (name, rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            self._metrics.cache.labels("hit").inc()
            return cached
        self._metrics.cache.labels("miss").inc()
        task = self._inflight.get(key)
        if task is None:
            remaining = run.deadline - self._clock()
            if remaining < _MIN_QUERY_TIME:
                run.failures.add("timeout")
                run.details.append(f"{name} {dns.rdatatype.to_text(rdtype)}: no time left")
                return None
            task = asyncio.ensure_future(self._query(name, rdtype, remaining))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        try:
            # Shielded: a caller giving up (script budget) does not cancel the query
            # another caller is waiting for.
            return await asyncio.shield(task)
        except _DnsFailure as exc:
            run.failures.add(exc.kind)
            run.details.append(str(exc))
            return None

    def _forget(self, key: tuple[str, int], task: asyncio.Task[Lookup]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _query(self, name: str, rdtype: RdataType, lifetime: float) -> Lookup:
        type_name = dns.rdatatype.to_text(rdtype)
        qname = dns.name.from_text(name)  # absolute: no search list (§4: names are FQDNs)
        try:
            # dnspython may sleep a retry back-off past its lifetime: hold it to ours.
            async with asyncio.timeout(lifetime):
                answer = await self._stub.resolve(
                    qname,
                    rdtype,
                    raise_on_no_answer=False,
                    lifetime=lifetime,
                    search=False,
                )
        except dns.resolver.NXDOMAIN as exc:
            # exc.responses() is untyped: the same map, read from the exception's kwargs.
            responses: list[dns.message.Message] = list(exc.kwargs.get("responses", {}).values())
            result = Lookup("nxdomain")
            ttl = _negative_ttl(responses[0]) if responses else None
            self._store(name, rdtype, result, ttl, negative=True)
            self._metrics.queries.labels(type_name, "nxdomain").inc()
            return result
        except (dns.exception.Timeout, TimeoutError):
            self._metrics.queries.labels(type_name, "timeout").inc()
            raise _DnsFailure("timeout", f"{name} {type_name}: no answer") from None
        except dns.exception.DNSException as exc:
            # NoNameservers: every server answered SERVFAIL/REFUSED/FORMERR or failed.
            self._metrics.queries.labels(type_name, "error").inc()
            raise _DnsFailure("error", f"{name} {type_name}: {exc}") from None
        if answer.rrset is None:
            result = Lookup("nodata")
            self._store(name, rdtype, result, _negative_ttl(answer.response), negative=True)
            self._metrics.queries.labels(type_name, "nodata").inc()
            return result
        result = Lookup("ok", tuple(answer.rrset))
        # The TTL of the whole chain (a CNAME may expire before the records it led to).
        ttl = min(rrset.ttl for rrset in answer.response.answer)
        self._store(name, rdtype, result, ttl, negative=False)
        self._metrics.queries.labels(type_name, "ok").inc()
        return result

    def _store(
        self, name: str, rdtype: RdataType, result: Lookup, ttl: float | None, *, negative: bool
    ) -> None:
        if ttl is None:
            return  # RFC 2308 §5: a negative answer without SOA is not cached
        cap = self.settings.max_negative_ttl if negative else self.settings.max_ttl
        self._cache.put((name, rdtype), result, min(ttl, cap))


def _negative_ttl(response: dns.message.Message) -> float | None:
    """RFC 2308 §5: the lesser of the SOA's TTL and its MINIMUM field."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def _host(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _stub_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    if settings.servers:
        stub = dns.asyncresolver.Resolver(configure=False)
        stub.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in settings.servers]
    else:
        try:
            stub = dns.asyncresolver.Resolver(configure=True)
        except dns.resolver.NoResolverConfiguration as exc:
            # No usable resolv.conf: every lookup fails (503) until servers are configured.
            log.warning("router: no DNS servers (%s); set router.dns_servers", exc)
            stub = dns.asyncresolver.Resolver(configure=False)
            stub.nameservers = []
    stub.timeout = settings.timeout
    stub.lifetime = settings.lifetime
    stub.cache = None  # ours (TTL-bounded, negative entries, clock injected) instead
    return stub
