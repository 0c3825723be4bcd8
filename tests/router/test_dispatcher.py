"""Dispatcher: algorithms' distributions, failover through the failure route, OPTIONS
probing against real sipp UAS destinations, states shared through the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.router.dispatcher import (
    ALG_CALL_LOAD,
    ALG_HASH_CALLID,
    ALG_HASH_FROM,
    ALG_HASH_KEY,
    ALG_HASH_RURI,
    ALG_PRIORITY,
    ALG_RANDOM,
    ALG_ROUND_ROBIN,
    ALG_WEIGHT,
    Dispatcher,
    SelectKeys,
    build_dispatcher,
)
from sipmesh.router.dsprobe import (
    LEASE_KEY,
    Prober,
    ProbeSettings,
    UdpProbeSender,
    parse_reply_codes,
)
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db, open_kv
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.schema import migrate
from tests.router.lbhelpers import decide, fail, invite, start_router, write_script

SCENARIO = str(Path(__file__).parent / "scenarios" / "uas_options.xml")


def rows(
    *uris: str, setid: int = 1, attrs: list[str] | None = None, priorities: list[int] | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "id": i + 1,
            "setid": setid,
            "destination": uri,
            "flags": 0,
            "priority": (priorities or [0] * len(uris))[i],
            "attrs": (attrs or [""] * len(uris))[i],
        }
        for i, uri in enumerate(uris)
    ]


DESTS = ["sip:10.0.0.1:5060", "sip:10.0.0.2:5060", "sip:10.0.0.3:5060"]


def dispatcher(*table: dict[str, Any], **kw: Any) -> Dispatcher:
    ds = Dispatcher(**kw)
    ds.set_tables(build_dispatcher(table))
    return ds


def first(ds: Dispatcher, alg: int, **keys: str) -> str:
    return ds.select(1, alg, SelectKeys(**keys))[0].uri


def test_hash_over_call_id_keeps_a_call_on_one_destination_and_spreads_calls() -> None:
    ds = dispatcher(*rows(*DESTS))
    call_ids = [f"call-{i}@host" for i in range(3000)]
    chosen = {c: first(ds, ALG_HASH_CALLID, call_id=c) for c in call_ids}
    for c in call_ids[:300]:  # the same Call-ID always lands on the same destination
        assert first(ds, ALG_HASH_CALLID, call_id=c) == chosen[c]
    counts = Counter(chosen.values())
    assert set(counts) == set(DESTS)
    assert all(800 < n < 1200 for n in counts.values()), counts
    # A destination going down moves only its own calls (the next one in the set).
    ds.apply_state(1, DESTS[1], "IP")
    for c in call_ids:
        now = first(ds, ALG_HASH_CALLID, call_id=c)
        if chosen[c] != DESTS[1]:
            assert now == chosen[c]
        else:
            assert now == DESTS[2]


def test_hash_over_from_to_ruri_and_key_ignore_tags_and_params() -> None:
    ds = dispatcher(*rows(*DESTS))
    a = first(ds, ALG_HASH_FROM, from_uri="<sip:alice@example.com>;tag=1")
    assert all(
        first(ds, ALG_HASH_FROM, from_uri=f"sip:alice@example.com;x={i}") == a for i in range(20)
    )
    users = Counter(
        first(ds, ALG_HASH_RURI, ruri=f"sip:{1000 + i}@example.com") for i in range(900)
    )
    assert len(users) == 3
    assert first(ds, ALG_HASH_KEY, key="4930123") == first(ds, ALG_HASH_KEY, key="4930123")


def test_round_robin_evens_out_and_skips_inactive() -> None:
    ds = dispatcher(*rows(*DESTS))
    counts = Counter(first(ds, ALG_ROUND_ROBIN) for _ in range(300))
    assert counts == dict.fromkeys(DESTS, 100)
    ds.apply_state(1, DESTS[0], "IP")
    counts = Counter(first(ds, ALG_ROUND_ROBIN) for _ in range(300))
    assert counts == {DESTS[1]: 150, DESTS[2]: 150}
    ds.apply_state(1, DESTS[0], "DX")
    ds.apply_state(1, DESTS[1], "IP")
    ds.apply_state(1, DESTS[2], "IP")
    assert ds.select(1, ALG_ROUND_ROBIN) == []


def test_weights_hold_within_tolerance() -> None:
    ds = dispatcher(*rows(*DESTS, attrs=["weight=50", "weight=30;duid=b", "weight=20"]))
    counts = Counter(first(ds, ALG_WEIGHT) for _ in range(10_000))
    for dest, share in zip(DESTS, (0.5, 0.3, 0.2), strict=True):
        assert abs(counts[dest] / 10_000 - share) < 0.01, counts
    # An inactive destination's share goes to the others.
    ds.apply_state(1, DESTS[0], "IP")
    counts = Counter(first(ds, ALG_WEIGHT) for _ in range(1000))
    assert set(counts) == {DESTS[1], DESTS[2]}


def test_random_priority_and_failover_order() -> None:
    ds = dispatcher(*rows(*DESTS, priorities=[1, 5, 3]), rng=random.Random(3))
    counts = Counter(first(ds, ALG_RANDOM) for _ in range(3000))
    assert all(900 < n < 1100 for n in counts.values()), counts
    # Priority: highest first, then the others in priority order.
    assert [d.uri for d in ds.select(1, ALG_PRIORITY)] == [DESTS[1], DESTS[2], DESTS[0]]
    assert [d.uri for d in ds.select(1, ALG_PRIORITY, limit=2)] == [DESTS[1], DESTS[2]]
    with pytest.raises(ValueError, match="not supported"):
        ds.select(1, 11)


async def test_call_load_picks_the_least_loaded_and_follows_call_ends() -> None:
    bus = MemoryBus()
    ds = dispatcher(*rows(*DESTS[:2], attrs=["maxload=2", ""]), bus=bus)
    await ds.start()
    try:
        for i in range(4):
            dest = ds.select(1, ALG_CALL_LOAD)[0]
            ds.call_started(f"c{i}", dest)
        assert (ds.load(1, DESTS[0]), ds.load(1, DESTS[1])) == (2, 2)
        # maxload=2 reached: only the second destination is offered.
        assert [d.uri for d in ds.select(1, ALG_CALL_LOAD)] == [DESTS[1]]
        # The edge's events end calls: a failed INVITE and a BYE.
        for call_id, method, status in (("c0", "INVITE", 486), ("c2", "BYE", 200)):
            env = events_pb2.Envelope(
                transaction=events_pb2.TransactionEvent(
                    method=method, status=status, call_id=call_id
                )
            )
            await bus.publish(f"sipmesh.transaction.{method}", env.SerializeToString())
        end = events_pb2.Envelope(
            dialog=events_pb2.DialogEvent(state=events_pb2.DialogEvent.STATE_END, call_id="c1")
        )
        await bus.publish("sipmesh.dialog.end", end.SerializeToString())
        await asyncio.sleep(0.05)
        assert ds.load(1, DESTS[0]) + ds.load(1, DESTS[1]) == 1
        assert ds.select(1, ALG_CALL_LOAD)[0].uri in DESTS
    finally:
        await ds.stop()
        await bus.close()


async def test_operator_set_state_through_the_admin_api_is_seen_at_once() -> None:
    """The admin API writes the KV entry and publishes only its audit event: the
    dispatcher re-reads the states on it instead of at the next periodic refresh."""
    bus, kv = MemoryBus(), MemoryKV()
    ds = dispatcher(*rows(*DESTS), bus=bus, kv=kv, state_refresh=3600)
    await ds.start()
    try:
        await kv.set(f"ds:state:1:{DESTS[1]}", b"IP")  # what the admin API writes
        other = events_pb2.Envelope(audit=events_pb2.AuditEvent(operation="alias.add", ok=True))
        await bus.publish("audit.admin", other.SerializeToString())
        await asyncio.sleep(0.05)
        assert ds.state_of(1, DESTS[1]) == "AP"  # unrelated writes change nothing
        env = events_pb2.Envelope(
            audit=events_pb2.AuditEvent(operation="dispatcher.set_state", ok=True)
        )
        await bus.publish("audit.admin", env.SerializeToString())
        for _ in range(100):
            if ds.state_of(1, DESTS[1]) == "IP":
                break
            await asyncio.sleep(0.01)
        assert ds.state_of(1, DESTS[1]) == "IP"
        assert [d.uri for d in ds.select(1, ALG_ROUND_ROBIN)][:1] != [DESTS[1]]
    finally:
        await ds.stop()
        await bus.close()


def test_reply_codes_in_kamailio_form() -> None:
    codes = parse_reply_codes("class=2;code=403;code=488")
    assert 200 in codes
    assert 299 in codes
    assert 403 in codes
    assert 488 in codes
    assert 404 not in codes
    assert parse_reply_codes("2xx,404") == frozenset([*range(200, 300), 404])


# -- through the routing script -------------------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_db(f"sqlite:///{tmp_path / 'ds.sqlite'}")
    await migrate(database)
    yield database
    await database.close()


async def insert(db: Database, table: list[dict[str, Any]]) -> None:
    for r in table:
        await db.execute(
            "INSERT INTO dispatcher (setid, destination, flags, priority, attrs) "
            "VALUES ($1, $2, $3, $4, $5)",
            r["setid"],
            r["destination"],
            r["flags"],
            r["priority"],
            r["attrs"],
        )


SCRIPT = """
def request_route(ctx):
    if not ctx.ds.select(1, int(ctx.hdr("X-Alg") or 4)):
        ctx.reply(503, "No destination")
        return
    ctx.t_on_failure("ds_failover")
    ctx.relay(ctx.ds.target())


def ds_failover(ctx):
    if ctx.t_is_canceled() or not ctx.ds.should_failover():
        return
    ctx.ds.mark("ip")
    if ctx.ds.next():
        ctx.relay(ctx.ds.target())
"""


async def test_failure_route_fails_over_on_timeout_and_5xx_only(
    db: Database, tmp_path: Path
) -> None:
    await insert(db, rows(*DESTS, attrs=["", "socket=udp:198.51.100.1:5060", ""]))
    router = await start_router(db, write_script(tmp_path, SCRIPT))
    try:
        msg = invite("sip:service@example.com", headers=[("X-Alg", "8")])
        d1 = await decide(router, msg)
        assert d1.relay.targets[0].dst_uri == DESTS[0]
        d2 = await fail(router, msg, d1, [408])  # no answer: next destination
        assert d2.relay.targets[0].dst_uri == DESTS[1]
        assert d2.relay.targets[0].socket == "udp:198.51.100.1:5060"
        d3 = await fail(router, msg, d2, [408, 500])
        assert d3.relay.targets[0].dst_uri == DESTS[2]
        assert (await fail(router, msg, d3, [408, 500, 503])).WhichOneof("action") == "proceed"
        assert (await fail(router, msg, d1, [486])).WhichOneof("action") == "proceed"
        # ds.mark("ip") took every failed destination out for new calls.
        await asyncio.sleep(0.01)
        assert all(router.env.dispatcher.state_of(1, d) == "IP" for d in DESTS)
        d = await decide(router, invite("sip:service@example.com", headers=[("X-Alg", "8")]))
        assert d.reply.code == 503
        # An operator puts one back (ds.set_state), and reloads a changed table.
        await router.dispatcher_set_state(1, DESTS[2], "active")
        d = await decide(router, invite("sip:service@example.com", headers=[("X-Alg", "8")]))
        assert d.relay.targets[0].dst_uri == DESTS[2]
        await router.dispatcher_set_state(1, DESTS[1], "a")
        await db.execute("UPDATE dispatcher SET priority = 9 WHERE destination = $1", DESTS[1])
        assert (await router.reload(what="dispatcher")).ok
        d = await decide(router, invite("sip:service@example.com", headers=[("X-Alg", "8")]))
        assert d.relay.targets[0].dst_uri == DESTS[1]
        with pytest.raises(KeyError):
            await router.dispatcher_set_state(1, "sip:nowhere", "a")
    finally:
        await router.stop(0)


# -- probing real destinations ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Uas:
    """A sipp UAS answering OPTIONS and calls on 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "sipp",
            "-sf",
            SCENARIO,
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-nostdin",
            "-timeout",
            "60",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.proc = None


@pytest.fixture
async def uases() -> AsyncIterator[list[Uas]]:
    assert shutil.which("sipp"), "sipp is required for this test"
    started = [Uas(free_port()) for _ in range(3)]
    for uas in started:
        await uas.start()
    try:
        yield started
    finally:
        for uas in started:
            await uas.stop()


async def probe_until(
    prober: Prober, ds: Dispatcher, uri: str, state: str, rounds: int = 20
) -> int:
    """Run probe rounds until ``uri`` is in ``state``; the number of rounds it took."""
    for n in range(1, rounds + 1):
        await prober.run_once()
        if ds.state_of(1, uri) == state:
            return n
        await asyncio.sleep(0.1)
    raise AssertionError(f"{uri} never became {state}: {ds.state_of(1, uri)}")


PROBE = ProbeSettings(interval=0.2, timeout=0.5, probing_threshold=2, inactive_threshold=2)


@pytest.mark.sipp
async def test_probing_marks_dead_destination_inactive_and_back(uases: list[Uas]) -> None:
    kv = MemoryKV()
    ds = dispatcher(*rows(*(u.uri for u in uases)), kv=kv)
    sender = UdpProbeSender()
    prober = Prober(ds, sender, PROBE, kv=kv, instance_id="r1")
    try:
        await probe_until(prober, ds, uases[0].uri, "AP")
        await asyncio.sleep(0.3)  # let every UAS bind before judging them
        await prober.run_once()
        assert all(ds.state_of(1, u.uri) == "AP" for u in uases)
        victim = uases[1]
        await victim.stop()
        # probing_threshold=2: one failed probe is not enough, two are.
        await prober.run_once()
        assert ds.state_of(1, victim.uri) == "AP"
        await prober.run_once()
        assert ds.state_of(1, victim.uri) == "IP"
        assert await kv.get(f"ds:state:1:{victim.uri}") == b"IP"
        picks = Counter(ds.select(1, ALG_ROUND_ROBIN)[0].uri for _ in range(100))
        assert victim.uri not in picks
        assert len(picks) == 2
        await victim.start()
        rounds = await probe_until(prober, ds, victim.uri, "AP")
        assert rounds >= 2  # inactive_threshold=2 answers needed
        picks = Counter(ds.select(1, ALG_ROUND_ROBIN)[0].uri for _ in range(99))
        assert picks == {u.uri: 33 for u in uases}
    finally:
        await prober.stop()
        sender.close()


# -- shared state on the real Redis ------------------------------------------------------------


@pytest.mark.redis
async def test_two_router_instances_share_states_and_one_prober(
    redis_url: str, unique_prefix: str, db: Database, tmp_path: Path
) -> None:
    await insert(db, rows(*DESTS))
    kv1 = open_kv(redis_url, prefix=unique_prefix)
    kv2 = open_kv(redis_url, prefix=unique_prefix)
    bus = MemoryBus()
    script = write_script(tmp_path, SCRIPT)
    r1 = await start_router(
        db,
        script,
        bus=bus,
        instance_id="r1",
        dispatcher=Dispatcher(kv1, bus, instance_id="r1", state_refresh=60),
    )
    r2 = await start_router(
        db,
        script,
        bus=bus,
        instance_id="r2",
        dispatcher=Dispatcher(kv2, bus, instance_id="r2", state_refresh=60),
    )
    sent: list[str] = []

    async def dead(dest: Any, request: Any, timeout: float) -> int:
        sent.append(dest.uri)
        return 0 if dest.uri == DESTS[0] else 200

    settings = ProbeSettings(interval=1.0, probing_threshold=1)
    p1 = Prober(r1.env.dispatcher, dead, settings, kv=kv1, instance_id="r1")
    p2 = Prober(r2.env.dispatcher, dead, settings, kv=kv2, instance_id="r2")
    try:
        # Only one instance probes: the lease holder.
        assert await p1.run_once()
        assert not await p2.run_once()
        assert sorted(sent) == sorted(DESTS)
        assert await kv1.get(LEASE_KEY) == b"r1"
        # r1's prober marked DESTS[0] inactive; r2 learns it over the bus + Redis.
        for _ in range(50):
            if r2.env.dispatcher.state_of(1, DESTS[0]) == "IP":
                break
            await asyncio.sleep(0.02)
        assert r2.env.dispatcher.state_of(1, DESTS[0]) == "IP"
        d = await decide(r2, invite("sip:s@example.com", headers=[("X-Alg", "8")]))
        assert d.relay.targets[0].dst_uri == DESTS[1]
        # A manual change on r2 (sipmesh ctl dispatcher set-state) reaches r1.
        await r2.dispatcher_set_state(1, DESTS[2], "disabled")
        for _ in range(50):
            if r1.env.dispatcher.state_of(1, DESTS[2]) == "DX":
                break
            await asyncio.sleep(0.02)
        assert r1.env.dispatcher.state_of(1, DESTS[2]) == "DX"
        # The lease passes on when its holder stops.
        await p1.stop()
        assert await p2.run_once()
    finally:
        await p2.stop()
        await r1.stop(0)
        await r2.stop(0)
        await bus.close()
        for kv in (kv1, kv2):
            for key in await kv.scan(""):
                await kv.delete(key)
            await kv.close()


@pytest.mark.sipp
async def test_probes_leave_through_the_sip_edge(uases: list[Uas]) -> None:
    from sipmesh.router.dsprobe import EdgeProbeSender, options_request
    from tests.edge.conftest import FakeRouter, start_edge

    edge = await start_edge(FakeRouter())
    try:

        async def get_edge() -> Any:
            return edge

        sender = EdgeProbeSender(get_edge)
        ds = dispatcher(*rows(uases[0].uri, f"sip:127.0.0.1:{free_port()}"))
        live, dead = ds.tables.sets[1]
        await asyncio.sleep(0.3)
        assert await sender(live, options_request(live, "sip:ds@localhost"), 2.0) == 200
        assert await sender(dead, options_request(dead, "sip:ds@localhost"), 0.5) == 0
    finally:
        await edge.stop(0)
