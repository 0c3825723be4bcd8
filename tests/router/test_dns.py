"""RFC 3263 resolution against a real DNS server on 127.0.0.1 (tests/router/dnsserver.py)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.router.dns import (
    DnsResolver,
    DnsSettings,
    Lookup,
    SrvRecord,
    TtlCache,
    order_srv,
    parse_server,
    settings_from_config,
)
from sipmesh.router.resolve import Hop, ResolveError, Resolver
from sipmesh.router.service import RouterService
from sipmesh.router.testing import DOMAIN, answer_challenge, route_request, sip_request
from sipmesh.runtime.config import ConfigError, load_config
from sipmesh.sip import Response, parse_message
from tests.router.dnsserver import DnsTestServer

# Every test is bounded: a resolution never takes longer than this (lifetime 0.5 s).
BOUND = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[DnsTestServer]:
    srv = DnsTestServer(negative_ttl=30)
    # NAPTR -> SRV -> A: TCP preferred (order 10) over UDP (order 20); a TLS record and
    # one with an unknown service that must be skipped when not supported.
    srv.add(
        "naptr.test",
        "NAPTR",
        '20 10 "s" "SIP+D2U" "" _sip._udp.naptr.test.',
        '10 10 "s" "SIP+D2T" "" _sip._tcp.naptr.test.',
        '30 10 "s" "SIPS+D2T" "" _sips._tcp.naptr.test.',
        '5 10 "s" "SIP+D2X" "" _sip._x.naptr.test.',
    )
    srv.add("_sip._tcp.naptr.test", "SRV", "10 0 5070 tcp1.naptr.test.")
    srv.add("_sip._udp.naptr.test", "SRV", "10 0 5080 udp1.naptr.test.")
    srv.add("_sips._tcp.naptr.test", "SRV", "10 0 5071 tls1.naptr.test.")
    srv.add("tcp1.naptr.test", "A", "192.0.2.11")
    srv.add("udp1.naptr.test", "A", "192.0.2.12")
    srv.add("tls1.naptr.test", "A", "192.0.2.13")
    # SRV only, two targets (listed backup first, to see the priority sort), 60 s TTL.
    srv.add(
        "_sip._udp.srv.test",
        "SRV",
        "20 0 5062 backup.srv.test.",
        "10 0 5061 primary.srv.test.",
        ttl=60,
    )
    srv.add("primary.srv.test", "A", "192.0.2.21", ttl=60)
    srv.add("backup.srv.test", "A", "192.0.2.22", ttl=60)
    srv.add("srv.test", "A", "192.0.2.20")
    # A/AAAA only.
    srv.add("aonly.test", "A", "192.0.2.5")
    srv.add("aonly.test", "AAAA", "2001:db8::5")
    # sips without NAPTR: _sips._tcp.
    srv.add("_sips._tcp.secure.test", "SRV", "10 0 5061 sip.secure.test.")
    srv.add("sip.secure.test", "A", "192.0.2.31")
    # NAPTR whose SRV name has no records: A of the domain with the NAPTR's transport.
    srv.add("nosrv.test", "NAPTR", '10 10 "s" "SIP+D2T" "" _sip._tcp.nosrv.test.')
    srv.add("nosrv.test", "A", "192.0.2.41")
    # "Decidedly not available" (RFC 2782).
    srv.add("_sip._udp.closed.test", "SRV", "0 0 0 .")
    srv.add("closed.test", "A", "192.0.2.51")
    srv.servfail.add("broken.test")
    srv.silent.add("slow.test")
    async with srv:
        yield srv


Make = Callable[..., DnsResolver]


@pytest.fixture
def make(server: DnsTestServer) -> Make:
    def factory(**kw: Any) -> DnsResolver:
        options: dict[str, Any] = {
            "servers": ((server.host, server.port),),
            "timeout": 0.2,
            "lifetime": 0.5,
            "transports": ("udp", "tcp"),
        }
        clock = kw.pop("clock", None)
        rng = kw.pop("rng", None)
        options.update(kw)
        extra: dict[str, Any] = {"rng": rng}
        if clock is not None:
            extra["clock"] = clock
        return DnsResolver(DnsSettings(**options), **extra)

    return factory


async def resolve(resolver: Resolver, uri: str) -> list[Hop]:
    async with asyncio.timeout(BOUND):
        return await resolver.resolve(uri)


async def failure(resolver: Resolver, uri: str) -> int:
    with pytest.raises(ResolveError) as info:
        await resolve(resolver, uri)
    return info.value.status


# -- RFC 3263 §4.1/§4.2 ------------------------------------------------------------------


async def test_naptr_srv_a_chain_in_naptr_order(make: Make, server: DnsTestServer) -> None:
    resolver = make()
    assert isinstance(resolver, Resolver)
    hops = await resolve(resolver, "sip:bob@naptr.test")
    # SIP+D2X unknown, SIPS+D2T not enabled: TCP (order 10) then UDP (order 20).
    assert hops == [Hop("tcp", "192.0.2.11", 5070), Hop("udp", "192.0.2.12", 5080)]
    assert server.count("naptr.test", "NAPTR") == 1
    assert server.count("_sips._tcp.naptr.test", "SRV") == 0


async def test_naptr_with_tls_enabled_keeps_sips_records(make: Make) -> None:
    resolver = make(transports=("udp", "tcp", "tls"))
    hops = await resolve(resolver, "sip:bob@naptr.test")
    assert [h.transport for h in hops] == ["tcp", "udp", "tls"]
    # A sips: URI uses only the SIPS+ services.
    assert await resolve(resolver, "sips:bob@naptr.test") == [Hop("tls", "192.0.2.13", 5071)]


async def test_srv_only_two_targets_in_priority_order(make: Make, server: DnsTestServer) -> None:
    hops = await resolve(make(), "sip:carol@srv.test")
    assert hops == [Hop("udp", "192.0.2.21", 5061), Hop("udp", "192.0.2.22", 5062)]
    # No NAPTR: the SRV names of the enabled transports were asked; no A of the domain.
    assert server.count("srv.test", "NAPTR") == 1
    assert server.count("_sip._udp.srv.test", "SRV") == 1
    assert server.count("_sip._tcp.srv.test", "SRV") == 1
    assert server.count("srv.test", "A") == 0


async def test_a_and_aaaa_only_with_default_port_and_family_preference(make: Make) -> None:
    v4_first = [Hop("udp", "192.0.2.5", 5060), Hop("udp", "2001:db8::5", 5060)]
    assert await resolve(make(), "sip:dave@aonly.test") == v4_first
    assert await resolve(make(prefer_ipv6=True), "sip:dave@aonly.test") == v4_first[::-1]
    # Explicit TCP: _sip._tcp has nothing, A/AAAA with TCP and 5060.
    hops = await resolve(make(), "sip:dave@aonly.test;transport=tcp")
    assert hops[0] == Hop("tcp", "192.0.2.5", 5060)


async def test_explicit_port_skips_naptr_and_srv(make: Make, server: DnsTestServer) -> None:
    hops = await resolve(make(), "sip:carol@srv.test:5099")
    assert hops == [Hop("udp", "192.0.2.20", 5099)]
    assert server.count("srv.test", "NAPTR") == 0
    assert server.count("_sip._udp.srv.test", "SRV") == 0
    assert server.count("srv.test", "A") == 1


async def test_numeric_ip_needs_no_dns(make: Make, server: DnsTestServer) -> None:
    resolver = make(transports=("udp", "tcp", "tls"))
    assert await resolve(resolver, "sip:x@192.0.2.9") == [Hop("udp", "192.0.2.9", 5060)]
    assert await resolve(resolver, "sip:x@192.0.2.9:5070;transport=TCP") == [
        Hop("tcp", "192.0.2.9", 5070)
    ]
    assert await resolve(resolver, "sips:x@[2001:db8::1]") == [Hop("tls", "2001:db8::1", 5061)]
    # maddr overrides the host (RFC 3263 §4).
    assert await resolve(resolver, "sip:x@naptr.test;maddr=192.0.2.8") == [
        Hop("udp", "192.0.2.8", 5060)
    ]
    assert server.total == 0


async def test_sips_without_naptr_uses_sips_srv(make: Make, server: DnsTestServer) -> None:
    resolver = make(transports=("udp", "tcp", "tls"))
    assert await resolve(resolver, "sips:eve@secure.test") == [Hop("tls", "192.0.2.31", 5061)]
    assert server.count("_sip._udp.secure.test", "SRV") == 0
    # TLS not enabled: a sips: URI cannot be reached.
    assert await failure(make(), "sips:eve@secure.test") == 503
    assert await failure(make(), "sips:eve@192.0.2.31") == 503


async def test_naptr_without_srv_records_falls_back_to_a(make: Make) -> None:
    assert await resolve(make(), "sip:x@nosrv.test") == [Hop("tcp", "192.0.2.41", 5060)]


async def test_srv_dot_target_means_not_available(make: Make) -> None:
    assert await failure(make(), "sip:x@closed.test") == 404


async def test_unknown_transport_or_scheme(make: Make) -> None:
    assert await failure(make(), "sip:x@192.0.2.9;transport=sctp") == 503
    assert await failure(make(), "tel:+123456") == 416


# -- failures --------------------------------------------------------------------------


async def test_nxdomain_is_404_and_cached(make: Make, server: DnsTestServer) -> None:
    clock = FakeClock()
    resolver = make(clock=clock)
    assert await failure(resolver, "sip:x@nowhere.test") == 404
    # The domain does not exist: nothing is asked after the NXDOMAIN of the NAPTR query.
    assert server.total == 1
    assert await failure(resolver, "sip:x@nowhere.test") == 404
    assert server.total == 1  # negative answer from the cache
    clock.now += 31  # SOA minimum of the test zone is 30 s
    assert await failure(resolver, "sip:x@nowhere.test") == 404
    assert server.count("nowhere.test", "NAPTR") == 2


async def test_servfail_is_503_and_not_cached(make: Make, server: DnsTestServer) -> None:
    resolver = make()
    assert await failure(resolver, "sip:x@broken.test") == 503
    before = server.count("broken.test", "NAPTR")
    assert await failure(resolver, "sip:x@broken.test") == 503
    assert server.count("broken.test", "NAPTR") == before + 1


async def test_no_answer_is_a_prompt_408(make: Make, server: DnsTestServer) -> None:
    resolver = make(timeout=0.1, lifetime=0.3)
    assert await failure(resolver, "sip:x@slow.test") == 408
    assert server.count("slow.test", "NAPTR") >= 1  # asked (and retried), never answered
    # The NAPTR query used up the lifetime: no SRV query followed, the error came at once.
    assert server.count("_sip._udp.slow.test", "SRV") == 0
    # With a port there is only A/AAAA to ask: the same.
    assert await failure(resolver, "sip:x@slow.test:5060") == 408


async def test_closed_dns_port_is_a_prompt_error() -> None:
    probe = DnsTestServer()
    await probe.start()
    port = probe.port
    probe.stop()  # nothing listens there any more
    resolver = DnsResolver(DnsSettings(servers=(("127.0.0.1", port),), timeout=0.1, lifetime=0.3))
    # ICMP port unreachable (503) or silence (408): an error response either way.
    assert await failure(resolver, "sip:x@example.test") in (408, 503)


# -- cache ---------------------------------------------------------------------------


async def test_positive_answers_are_cached_for_their_ttl(make: Make, server: DnsTestServer) -> None:
    clock = FakeClock()
    resolver = make(clock=clock)
    first = await resolve(resolver, "sip:carol@srv.test")
    asked = server.total
    assert await resolve(resolver, "sip:carol@srv.test") == first
    assert server.total == asked  # every record set came from the cache
    clock.now += 61  # the SRV and A records have a 60 s TTL
    assert await resolve(resolver, "sip:carol@srv.test") == first
    assert server.count("_sip._udp.srv.test", "SRV") == 2
    assert server.count("primary.srv.test", "A") == 2
    # The NAPTR NODATA carries the 30 s negative TTL: expired as well.
    assert server.count("srv.test", "NAPTR") == 2


async def test_concurrent_lookups_share_one_query(make: Make, server: DnsTestServer) -> None:
    resolver = make()
    async with asyncio.timeout(BOUND):
        results = await asyncio.gather(*(resolver.resolve("sip:x@aonly.test") for _ in range(20)))
    assert all(r == results[0] for r in results)
    assert server.count("aonly.test", "NAPTR") == 1
    assert server.count("aonly.test", "A") == 1


def test_ttl_cache_is_bounded_lru_and_expires() -> None:
    clock = FakeClock()
    cache = TtlCache(2, clock)
    one, two, three = (Lookup("ok", (n,)) for n in (1, 2, 3))
    cache.put(("a", 1), one, 10)
    cache.put(("b", 1), two, 10)
    assert cache.get(("a", 1)) == one  # a is now the most recently used
    cache.put(("c", 1), three, 10)
    assert len(cache) == 2
    assert cache.get(("b", 1)) is None  # evicted, least recently used
    assert cache.get(("a", 1)) == one
    clock.now += 10
    assert cache.get(("a", 1)) is None
    cache.put(("d", 1), one, 0)  # TTL 0: not cached
    assert cache.get(("d", 1)) is None
    disabled = TtlCache(0, clock)
    disabled.put(("a", 1), one, 10)
    assert disabled.get(("a", 1)) is None


# -- RFC 2782 ordering ---------------------------------------------------------------


def test_srv_order_by_priority_then_weight_distribution() -> None:
    rng = random.Random(3263)
    records = [
        SrvRecord(10, 60, 5060, "a"),
        SrvRecord(10, 30, 5060, "b"),
        SrvRecord(10, 10, 5060, "c"),
        SrvRecord(10, 0, 5060, "z"),
        SrvRecord(5, 0, 5060, "first"),
        SrvRecord(20, 100, 5060, "last"),
    ]
    picks = 20000
    firsts: Counter[str] = Counter()
    for _ in range(picks):
        ordered = order_srv(records, rng)
        assert ordered[0].target == "first"
        assert ordered[-1].target == "last"
        assert sorted(r.target for r in ordered[1:5]) == ["a", "b", "c", "z"]
        firsts[ordered[1].target] += 1
    # Within priority 10 the first pick follows the weights 60:30:10 (RFC 2782); the
    # weight-0 record is first only when the random number drawn is 0 (1 in 101).
    expected = {"a": 60 / 101, "b": 30 / 101, "c": 10 / 101, "z": 1 / 101}
    for target, share in expected.items():
        assert abs(firsts[target] / picks - share) < 0.015, (target, firsts)


def test_srv_order_is_reproducible_with_a_seed() -> None:
    records = [SrvRecord(1, w, 5060, str(w)) for w in (1, 2, 3, 4)]
    assert order_srv(records, random.Random(7)) == order_srv(records, random.Random(7))


# -- configuration ---------------------------------------------------------------------


def test_parse_server() -> None:
    assert parse_server("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_server("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert parse_server("2001:db8::53") == ("2001:db8::53", 53)
    assert parse_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    for bad in ("dns.example", "[::1", "192.0.2.1:0"):
        with pytest.raises(ValueError):
            parse_server(bad)


def test_settings_from_config() -> None:
    config = load_config(
        env={},
        overrides={
            "listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061", "ws:127.0.0.1:8080"],
            "router": {
                "dns_servers": ["127.0.0.1:5353"],
                "dns_lifetime": 5.0,
                "script_timeout": 1.0,
                "prefer_ipv6": True,
            },
        },
    )
    settings = settings_from_config(config)
    assert settings.servers == (("127.0.0.1", 5353),)
    assert settings.transports == ("udp", "tls")  # the listeners', no outgoing ws
    assert settings.lifetime == pytest.approx(0.8)  # below the script's budget
    assert settings.prefer_ipv6
    config.router.dns_transports = ["tcp", "udp"]
    assert settings_from_config(config).transports == ("tcp", "udp")
    with pytest.raises(ConfigError, match=r"router\.dns_servers"):
        load_config(env={}, overrides={"router": {"dns_servers": ["ns.example"]}})


async def test_metrics_count_queries_and_failures(server: DnsTestServer) -> None:
    registry = CollectorRegistry()
    resolver = DnsResolver(
        DnsSettings(servers=((server.host, server.port),), lifetime=0.5), registry=registry
    )
    await failure(resolver, "sip:x@nowhere.test")
    await failure(resolver, "sip:x@nowhere.test")
    assert (
        registry.get_sample_value(
            "sipmesh_dns_queries_total", {"type": "NAPTR", "result": "nxdomain"}
        )
        == 1
    )
    assert registry.get_sample_value("sipmesh_dns_cache_lookups_total", {"result": "hit"}) == 1
    assert registry.get_sample_value("sipmesh_failed_dns_request_total", {"status": "404"}) == 2


# -- SIPOUT through the router service -------------------------------------------------


async def authed_invite(router: RouterService, ruri: str) -> router_pb2.Decision:
    msg = sip_request("INVITE", ruri)
    first = await router.route(route_request(msg))
    assert first.reply.code == 407 or _status(first) == 407
    again = answer_challenge(msg, first.reply.raw, "alice", "alicepw")
    return await router.route(route_request(again))


def _status(decision: router_pb2.Decision) -> int:
    assert decision.WhichOneof("action") == "reply", decision
    if decision.reply.raw:
        parsed = parse_message(decision.reply.raw)
        assert isinstance(parsed, Response)
        return parsed.status
    return decision.reply.code


async def test_sipout_relays_to_every_srv_target_as_serial_groups(
    make_router: Any, make: Make
) -> None:
    router: RouterService = await make_router()
    router.env.resolver = make()
    decision = await authed_invite(router, "sip:carol@srv.test")
    assert decision.WhichOneof("action") == "relay"
    relay = decision.relay
    assert relay.mode == router_pb2.Relay.FORK_MODE_SERIAL
    got = [
        (t.uri, t.group, t.destination.transport, t.destination.host, t.destination.port)
        for t in relay.targets
    ]
    udp = common_pb2.TRANSPORT_UDP
    # One group per hop, in SRV priority order: the edge tries the backup when the
    # primary times out or fails.
    assert got == [
        ("sip:carol@srv.test", 0, udp, "192.0.2.21", 5061),
        ("sip:carol@srv.test", 1, udp, "192.0.2.22", 5062),
    ]
    assert relay.handlers.failure == "manage_failure"
    assert relay.record_route
    assert DOMAIN != "srv.test"  # a foreign domain: SIPOUT, not LOCATION


async def test_sipout_answers_resolution_failures(make_router: Any, make: Make) -> None:
    router: RouterService = await make_router()
    router.env.resolver = make(timeout=0.1, lifetime=0.3)
    for domain, status in (("nowhere.test", 404), ("broken.test", 503), ("slow.test", 408)):
        decision = await authed_invite(router, f"sip:carol@{domain}")
        # A prompt error response from the script, not the runner's 500 for a timeout.
        assert _status(decision) == status, domain
