"""Accounting of real calls through `sipmesh serve` (issue 9): sipp places an answered
(held for a known time), a busy, a cancelled and an unanswered call, and the acc,
missed_calls and cdrs rows must be exactly those kamailio.cfg's WITH_ACCDB and the CDR
rules of docs/accounting.md give.

Two variants: the embedded default (SQLite, in-process bus) and PostgreSQL + NATS
JetStream, each with edge, router, registrar and accounting in one process.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from sipmesh.accounting.query import make_filters, query_acc, query_cdrs
from sipmesh.state.db import Row
from sipmesh.state.factory import open_bus, open_db
from tests.e2e.procs import SipmeshProcess, ctl, free_port, make_process
from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_call_sipp import DOMAIN, inject, register_at
from tests.e2e.test_routing_features import Peer, final_status, peer
from tests.e2e.test_routing_features import peers as peers  # the fixture

pytestmark = [pytest.mark.sipp, pytest.mark.e2e, pytest.mark.slow]

TARGETS = "edge,router,registrar,accounting"
USERS = ("alice", "bob", "carol", "dave", "erin")
HOLD = 1.5  # seconds between the ACK and the BYE of the answered call
RING = 0.5  # seconds the cancelled call rings before the caller's CANCEL
TIMER_C = 2.0  # fr_inv_timer: the unanswered call is given up after this


@dataclass
class Backends:
    db: str
    bus: str
    namespace: str = "sipmesh"


@pytest.fixture
def pg_database(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone (the tables must hold its rows only)."""
    name = f"e2eacc_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(postgres_admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(postgres_admin_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def servers(pg_database: str, nats_url: str, unique_prefix: str) -> Iterator[Backends]:
    """PostgreSQL + NATS; the namespace keeps this test's subjects and stream apart."""
    backends = Backends(pg_database, nats_url, f"acc{unique_prefix}".replace("-", ""))
    yield backends

    async def drop_stream() -> None:
        bus = await open_bus(nats_url, prefix=backends.namespace)
        try:
            await bus.delete_stream("events")
        finally:
            await bus.close()

    asyncio.run(drop_stream())


def sipmesh_process(
    workdir: Path, name: str, targets: str, backends: Backends, extra: dict[str, object]
) -> SipmeshProcess:
    config: dict[str, object] = {"namespace": backends.namespace, **extra}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"SIPMESH_DB": backends.db, "SIPMESH_BUS": backends.bus}
    return make_process(
        name,
        workdir,
        targets=targets,
        env=env,
        extra_args=["--domain", DOMAIN, "--config", str(path)],
    )


def provision(db: str) -> None:
    for user in USERS:
        ctl("--db", db, "add", f"{user}@{DOMAIN}", f"{user}-pw")


@dataclass
class Placed:
    """What the caller saw of one call: its dialog identifiers and final status."""

    call_id: str
    from_tag: str
    to_tag: str  # of the final response the caller received
    callee_tag: str  # the callee UAS's own To tag (its 180/200/486)


def _header(message: str, name: str) -> str:
    for line in message.splitlines():
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {message!r}")


def _tag(value: str) -> str:
    return value.split(";tag=", 1)[1].split(";")[0] if ";tag=" in value else ""


def _messages(trace: Path) -> list[str]:
    """The SIP messages of a sipp -trace_msg file."""
    text = trace.read_text(errors="replace")
    return [part.split("\n", 2)[-1].strip() for part in text.split("-" * 47)[1:]]


def caller(
    proc: SipmeshProcess, workdir: Path, callee: str, scenario: str, final: int, *extra: str
) -> Placed:
    """alice calls `callee`, the call ends with `final`; what alice saw of it."""
    trace = workdir / f"alice-{callee}-messages.log"
    options = ["-au", "alice", "-ap", "alice-pw", "-trace_msg", "-message_file", str(trace)]
    result = run_sipp(
        f"127.0.0.1:{proc.sip_port}",
        scenario=scenario,
        workdir=workdir / f"alice-{callee}",
        inf=inject(workdir, f"alice-{callee}.csv", f"alice;{DOMAIN};{callee}"),
        local_port=free_port(),  # not 5060: other tests' user agents may use it
        extra=[*options, *extra],
        timeout=20,
    )
    assert isinstance(result, SippResult)
    assert result.returncode == 0, result.output + proc.log()
    messages = _messages(trace)
    finals = [m for m in messages if m.startswith(f"SIP/2.0 {final} ") and "INVITE" in m]
    assert finals, messages
    callee_side = _messages(workdir / f"{callee}-messages.log")
    callee_replies = [m for m in callee_side if m.startswith("SIP/2.0 ") and " INVITE" in m]
    assert callee_replies, callee_side
    return Placed(
        call_id=_header(finals[0], "Call-ID"),
        from_tag=_tag(_header(finals[0], "From")),
        to_tag=_tag(_header(finals[0], "To")),
        callee_tag=_tag(_header(callee_replies[0], "To")),
    )


@dataclass
class Calls:
    """The four calls of issue 9 as placed by `place_calls`."""

    answered: Placed
    busy: Placed
    cancelled: Placed
    unanswered: Placed
    contact_port: dict[str, int]


def place_calls(proc: SipmeshProcess, workdir: Path, peers: list[Peer]) -> Calls:
    """An answered, a busy, a cancelled and an unanswered call, each to its own callee."""
    scenarios = {
        "bob": "uas_answer.xml",
        "carol": "uas_busy.xml",
        "dave": "uas_no_answer.xml",
        "erin": "uas_no_answer.xml",
    }
    ports: dict[str, int] = {}
    for user, scenario in scenarios.items():
        ports[user] = free_port()
        register_at(proc, workdir, user, f"{user}-pw", ports[user], "u1")
        peer(peers, workdir, scenario, user, ports[user])
    hold, ring = str(int(HOLD * 1000)), str(int(RING * 1000))
    return Calls(
        answered=caller(proc, workdir, "bob", "call_auth_hold.xml", 200, "-d", hold),
        busy=caller(proc, workdir, "carol", final_status(workdir, 486), 486),
        cancelled=caller(proc, workdir, "dave", "call_cancel.xml", 487, "-d", ring),
        unanswered=caller(proc, workdir, "erin", final_status(workdir, 408), 408),
        contact_port=ports,
    )


async def _rows(db_url: str) -> tuple[list[Row], list[Row], list[Row]]:
    db = await open_db(db_url)
    try:
        everything = make_filters(limit=1000)
        return (
            await query_acc(db, "acc", everything),
            await query_acc(db, "missed_calls", everything),
            await query_cdrs(db, everything),
        )
    finally:
        await db.close()


def wait_rows(db_url: str, cdrs: int, timeout: float = 20.0) -> tuple[list[Row], ...]:
    """Poll until `cdrs` CDRs are complete (ended), bounded by `timeout`."""

    async def poll() -> tuple[list[Row], list[Row], list[Row]]:
        async with asyncio.timeout(timeout):
            while True:
                _, _, cdr = await _rows(db_url)
                if len([c for c in cdr if c["end_time"] is not None]) >= cdrs:
                    await asyncio.sleep(0.5)  # anything late would show up now
                    return await _rows(db_url)
                await asyncio.sleep(0.1)

    return asyncio.run(poll())


def seconds(later: object, earlier: object) -> float:
    assert isinstance(later, datetime)
    assert isinstance(earlier, datetime)
    return (later - earlier).total_seconds()


def _without(rows: list[Row], *columns: str) -> list[dict[str, object]]:
    return sorted(
        ({k: v for k, v in row.items() if k not in ("id", *columns)} for row in rows),
        key=lambda r: (str(r.get("callid") or r.get("call_id")), str(r.get("method", ""))),
    )


def check_records(db_url: str, calls: Calls) -> None:
    """The exact rows of the four calls (docs/accounting.md, kamailio.cfg WITH_ACCDB)."""
    acc, missed, cdrs = wait_rows(db_url, 4)
    a, b, c, u = calls.answered, calls.busy, calls.cancelled, calls.unanswered
    alice = {"src_user": "alice", "src_domain": DOMAIN, "src_ip": "127.0.0.1"}

    def acc_row(
        call: Placed, method: str, code: str, reason: str, ouser: str, user: str, domain: str
    ) -> dict[str, object]:
        return {
            "method": method,
            "from_tag": call.from_tag,
            "to_tag": call.to_tag,
            "callid": call.call_id,
            "sip_code": code,
            "sip_reason": reason,
            **alice,
            "dst_ouser": ouser,
            "dst_user": user,
            "dst_domain": domain,
        }

    # FLT_ACC on the INVITE and the BYE: two rows for the answered call, only it.
    # dst_user/dst_domain are those of the branch's R-URI: the INVITE went to bob's
    # registered contact, the BYE to the Contact of his 200 (no user part).
    assert _without(acc, "time") == _without(
        [
            acc_row(a, "INVITE", "200", "OK", "bob", "bob", "127.0.0.1"),
            acc_row(a, "BYE", "200", "OK", "bob", "", "127.0.0.1"),
        ]
    )
    # FLT_ACCMISSED (route LOCATION) on the other three. The 486 and the 487 are the
    # callees' (the CANCEL's 487 relayed, RFC 3261 §16.10): dst_* of the winning
    # branch's R-URI; the 408 is the proxy's own answer (its to-tag, no winning
    # branch: dst_* of the R-URI after lookup is not known there, so the called AOR).
    assert _without(missed, "time") == _without(
        [
            acc_row(b, "INVITE", "486", "Busy Here", "carol", "carol", "127.0.0.1"),
            acc_row(c, "INVITE", "487", "Request Terminated", "dave", "dave", "127.0.0.1"),
            acc_row(u, "INVITE", "408", "Request Timeout", "erin", "erin", DOMAIN),
        ]
    )

    def cdr_row(
        call: Placed, callee: str, dst_uri: str, status: int, end: str
    ) -> dict[str, object]:
        return {
            "call_id": call.call_id,
            "from_tag": call.from_tag,
            "to_tag": call.callee_tag,
            "caller": f"alice@{DOMAIN}",
            "callee": f"{callee}@{DOMAIN}",
            "src_ip": "127.0.0.1",
            "dst_uri": dst_uri,
            "status": status,
            "end_reason": end,
        }

    def contact(user: str) -> str:
        return f"sip:{user}@127.0.0.1:{calls.contact_port[user]};transport=UDP"

    times = ("start_time", "answer_time", "end_time", "duration")
    assert _without(cdrs, *times) == _without(
        [
            cdr_row(a, "bob", contact("bob"), 200, "bye"),
            cdr_row(b, "carol", contact("carol"), 486, "busy"),
            cdr_row(c, "dave", contact("dave"), 487, "cancel"),
            cdr_row(u, "erin", f"sip:erin@{DOMAIN}", 408, "unanswered"),
        ]
    )

    by_call = {row["call_id"]: row for row in cdrs}
    acc_by = {(row["callid"], row["method"]): row for row in acc}
    missed_by = {row["callid"]: row for row in missed}
    answered = by_call[a.call_id]
    # Answered: answer = the INVITE's 200 (its acc time), end = the BYE; the duration
    # is the hold time sipp paused between its ACK and its BYE (plus transit).
    assert answered["answer_time"] == acc_by[(a.call_id, "INVITE")]["time"]
    assert answered["start_time"] <= answered["answer_time"]
    bye_gap = seconds(acc_by[(a.call_id, "BYE")]["time"], answered["answer_time"])
    assert HOLD <= bye_gap < HOLD + 1.0
    assert isinstance(answered["duration"], float)
    assert HOLD <= answered["duration"] < HOLD + 1.0
    assert answered["duration"] == pytest.approx(
        seconds(answered["end_time"], answered["answer_time"]), abs=0.001
    )
    # Not answered: no answer time, duration 0, ended when the final response was sent.
    for call, rang_at_least in ((b, 0.0), (c, RING), (u, TIMER_C)):
        row = by_call[call.call_id]
        assert row["answer_time"] is None
        assert row["duration"] == 0
        assert row["end_time"] == missed_by[call.call_id]["time"]
        assert rang_at_least <= seconds(row["end_time"], row["start_time"]) < rang_at_least + 1.5


def check_ctl(db_url: str, calls: Calls) -> None:
    """The operator's view of the same rows: `sipmesh ctl acc|cdr` with filters."""
    answered = json.loads(
        ctl("--db", db_url, "cdr", "--callid", calls.answered.call_id, "--format", "json")
    )
    assert [(r["callee"], r["status"], r["end_reason"]) for r in answered] == [
        (f"bob@{DOMAIN}", 200, "bye")
    ]
    assert HOLD <= float(answered[0]["duration"]) < HOLD + 1.0
    missed = json.loads(
        ctl("--db", db_url, "acc", "--missed", "--status", "4xx", "--format", "json")
    )
    assert sorted(r["sip_code"] for r in missed) == ["408", "486", "487"]
    busy = ctl("--db", db_url, "cdr", "--ended-by", "busy", "--format", "csv").splitlines()
    assert len(busy) == 2  # header + the busy call
    assert calls.busy.call_id in busy[1]
    mine = json.loads(ctl("--db", db_url, "acc", "--user", "alice", "--format", "json"))
    assert sorted(r["method"] for r in mine) == ["BYE", "INVITE"]


def run_four_calls(workdir: Path, peers: list[Peer], backends: Backends) -> None:
    proc = sipmesh_process(workdir, "core", TARGETS, backends, {"edge": {"fr_inv_timer": TIMER_C}})
    proc.start()
    try:
        proc.wait_ready()
        provision(backends.db)
        calls = place_calls(proc, workdir, peers)
        check_records(backends.db, calls)
        check_ctl(backends.db, calls)
    finally:
        assert proc.stop() == 0, proc.log()


def test_four_calls_embedded_sqlite(workdir: Path, peers: list[Peer]) -> None:
    """The embedded default: SQLite and the in-process bus."""
    run_four_calls(workdir, peers, Backends(f"sqlite:///{workdir / 'acc.sqlite'}", "memory"))


@pytest.mark.postgres
@pytest.mark.nats
def test_four_calls_postgres_nats(workdir: Path, peers: list[Peer], servers: Backends) -> None:
    """Events through NATS JetStream (durable consumer), records in PostgreSQL."""
    run_four_calls(workdir, peers, servers)
