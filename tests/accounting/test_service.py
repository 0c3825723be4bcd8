"""The accounting service end to end on both backends: events on the bus -> exact rows."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from sipmesh.accounting.service import AccountingService
from sipmesh.accounting.sinks import JsonLinesSink
from sipmesh.accounting.testing import call_events
from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from tests.accounting.helpers import count, wait_for

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def dt(offset: float) -> datetime:
    return datetime(2023, 11, 14, 22, 13, 20) + timedelta(seconds=offset)


ACC_COLS = "method, callid, sip_code, sip_reason, time, src_user, src_ip, dst_ouser, dst_user"
CDR_COLS = (
    "call_id, caller, callee, src_ip, start_time, answer_time, end_time, duration, status, "
    "end_reason"
)


async def publish_calls(bus: EventBus, mono_offset: float = 1e9) -> None:
    """Four calls, as the edge publishes them (monotonic transaction timestamps)."""
    calls = [
        call_events("answered", "call-answered", T0, ring=3.0, talk=61.5, mono_offset=mono_offset),
        call_events("busy", "call-busy", T0 + 100, ring=1.0, mono_offset=mono_offset),
        call_events("cancelled", "call-cancel", T0 + 200, ring=12.0, mono_offset=mono_offset),
        call_events("unanswered", "call-noanswer", T0 + 300, ring=30.0, mono_offset=mono_offset),
    ]
    for events in calls:
        for env in events:
            await bus.publish(
                f"sipmesh.transaction.{env.transaction.method}", env.SerializeToString()
            )


async def test_four_outcomes_give_the_exact_rows(
    backends: tuple[Database, EventBus], tmp_path: Path
) -> None:
    db, bus = backends
    sink = JsonLinesSink(tmp_path / "acc.jsonl")
    service = AccountingService(
        AccountingConfig(), db=db, bus=bus, metrics=CollectorRegistry(), sinks=[sink]
    )
    await service.start()
    try:
        await bus.ensure_stream("events", ["sipmesh.transaction.>", "sipmesh.dialog.>"])
        await publish_calls(bus)

        async def done() -> bool:
            return await count(db, "cdrs WHERE end_time IS NOT NULL") == 4

        await wait_for(done)
        acc = await db.fetch(f"SELECT {ACC_COLS} FROM acc ORDER BY time")
        missed = await db.fetch(f"SELECT {ACC_COLS} FROM missed_calls ORDER BY time")
        cdrs = await db.fetch(f"SELECT {CDR_COLS} FROM cdrs ORDER BY start_time")
    finally:
        await service.stop(1.0)

    cols = ACC_COLS.split(", ")
    assert acc == [
        dict(zip(cols, r, strict=True))
        for r in [
            ("INVITE", "call-answered", "200", "OK", dt(3.0), "alice", "192.0.2.10", "bob", "bob"),
            ("BYE", "call-answered", "200", "OK", dt(64.55), "alice", "192.0.2.10", "bob", "bob"),
        ]
    ]
    who = ("alice", "192.0.2.10", "bob", "bob")
    assert missed == [
        dict(zip(cols, r, strict=True))
        for r in [
            ("INVITE", "call-busy", "486", "Busy Here", dt(101), *who),
            ("INVITE", "call-cancel", "487", "Request Terminated", dt(212), *who),
            ("INVITE", "call-noanswer", "408", "Request Timeout", dt(330), *who),
        ]
    ]
    cols = CDR_COLS.split(", ")
    a, c = "alice@example.com", "bob@example.com"
    ip = "192.0.2.10"
    assert cdrs == [
        dict(zip(cols, r, strict=True))
        for r in [
            ("call-answered", a, c, ip, dt(0), dt(3.0), dt(64.5), 61.5, 200, "bye"),
            ("call-busy", a, c, ip, dt(100), None, dt(101), 0.0, 486, "busy"),
            ("call-cancel", a, c, ip, dt(200), None, dt(212), 0.0, 487, "cancel"),
            ("call-noanswer", a, c, ip, dt(300), None, dt(330), 0.0, 408, "unanswered"),
        ]
    ]
    # The JSON-lines sink got every record once, CDRs when complete.
    lines = [json.loads(line) for line in (tmp_path / "acc.jsonl").read_text().splitlines()]
    kinds = sorted(line["type"] for line in lines)
    assert kinds == ["acc"] * 2 + ["cdr"] * 4 + ["missed_calls"] * 3
    answered = next(x for x in lines if x["type"] == "cdr" and x["call_id"] == "call-answered")
    assert (answered["duration"], answered["end_reason"]) == (61.5, "bye")


async def test_redelivered_event_writes_nothing_twice(backends: tuple[Database, EventBus]) -> None:
    """The same envelope delivered twice (a lost ack) is recorded once."""
    db, bus = backends
    service = AccountingService(AccountingConfig(), db=db, bus=bus, metrics=CollectorRegistry())
    await service.start()
    try:
        invite, bye = call_events("answered", "dup-call", T0, talk=10.0)
        for env in (invite, invite, bye, bye, invite):
            await bus.publish(
                "sipmesh.transaction." + env.transaction.method, env.SerializeToString()
            )

        async def done() -> bool:
            total = service.metrics.events.labels("recorded")._value.get()
            dups = service.metrics.events.labels("duplicate")._value.get()
            return bool(total + dups == 5)

        await wait_for(done)
        assert await count(db, "acc") == 2
        assert await count(db, "cdrs") == 1
        assert await db.fetchval("SELECT duration FROM cdrs") == 10.0
        assert await count(db, "events_processed") == 2
    finally:
        await service.stop(1.0)


async def test_dialog_timeout_closes_and_marks_open_calls(
    backends: tuple[Database, EventBus],
) -> None:
    db, bus = backends
    clock = FakeClock(T0 + 10)
    config = AccountingConfig(dialog_timeout=3600, sweep_interval=3600)
    service = AccountingService(config, db=db, bus=bus, metrics=CollectorRegistry(), clock=clock)
    await service.start()
    try:
        (invite, _bye) = call_events("answered", "no-bye", T0, ring=2.0)
        await bus.publish("sipmesh.transaction.INVITE", invite.SerializeToString())

        async def recorded() -> bool:
            return await count(db, "cdrs WHERE answer_time IS NOT NULL") == 1

        await wait_for(recorded)
        assert await service.sweeper.sweep_once() == []  # not yet timed out
        clock.advance(3600)
        closed = await service.sweeper.sweep_once()
        assert [c.call_id for c in closed] == ["no-bye"]
        assert await service.sweeper.sweep_once() == []  # closed once
        row = await db.fetchrow("SELECT end_time, duration, end_reason, status FROM cdrs")
        assert row == {
            "end_time": dt(3602.0),
            "duration": 3600.0,
            "end_reason": "timeout",
            "status": 200,
        }
        assert service.metrics.timeouts._value.get() == 1
    finally:
        await service.stop(1.0)


async def test_ready_follows_running_state(backends: tuple[Database, EventBus]) -> None:
    db, bus = backends
    service = AccountingService(AccountingConfig(), db=db, bus=bus, metrics=CollectorRegistry())
    assert not service.ready()
    await service.start()
    assert service.ready()
    await service.stop(1.0)
    assert not service.ready()
    assert time.time() > T0
