"""Durability on the real servers: NATS JetStream and PostgreSQL.

Every record is written once whatever happens between publish, commit and ack: a
consumer stopped while events arrive, a crash between commit and ack, two instances
sharing the durable consumer, PostgreSQL down for a while, the process SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from sipmesh.accounting.consumer import AccountingConsumer, AccountingMetrics
from sipmesh.accounting.service import AccountingService
from sipmesh.accounting.store import RecordStore, Written
from sipmesh.accounting.testing import call_events
from sipmesh.runtime.backends import subject_prefix
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.state.bus import EventBus, Message
from sipmesh.state.db import Database
from sipmesh.state.factory import open_bus
from sipmesh.state.testing import PrivatePostgres, free_port, nats_server, wait_port
from tests.accounting.helpers import count, migrated, wait_for

T0 = 1_700_000_000.0
SUBJECTS = ["sipmesh.transaction.>", "sipmesh.dialog.>"]


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    db = await migrated(pg_url)
    yield db
    await db.close()


@pytest.fixture
async def nats(nats_url: str, unique_prefix: str) -> AsyncIterator[EventBus]:
    bus = await open_bus(nats_url, prefix=unique_prefix)
    await bus.ensure_stream("events", SUBJECTS)
    yield bus
    await bus.delete_stream("events")
    await bus.close()


async def publish_calls(bus: EventBus, first: int, n: int, pause: float = 0.0) -> None:
    """``n`` answered calls (INVITE + BYE each) numbered from ``first``."""
    for i in range(first, first + n):
        for env in call_events("answered", f"call-{i}", T0 + i, ring=1.0, talk=10.0 + i % 7):
            await bus.publish(
                f"sipmesh.transaction.{env.transaction.method}", env.SerializeToString()
            )
        if pause:
            await asyncio.sleep(pause)


async def assert_exactly(db: Database, calls: int) -> None:
    """Every call recorded once: 2 acc rows and one closed CDR per call, nothing more."""
    assert await count(db, "acc") == 2 * calls
    assert await db.fetchval("SELECT COUNT(DISTINCT callid) FROM acc") == calls
    assert await count(db, "cdrs") == calls
    assert await count(db, "cdrs WHERE end_reason = 'bye' AND duration >= 10") == calls
    assert await count(db, "events_processed") == 2 * calls
    dup = await db.fetchval(
        "SELECT COUNT(*) FROM (SELECT callid, method FROM acc GROUP BY callid, method "
        "HAVING COUNT(*) > 1) d"
    )
    assert dup == 0


def service(db: Database, bus: EventBus, **overrides: object) -> AccountingService:
    config = AccountingConfig(ack_wait=5.0, retry_initial=0.05, retry_max=0.5, **overrides)
    return AccountingService(config, db=db, bus=bus, metrics=CollectorRegistry())


async def test_consumer_stopped_while_publishing_then_restarted(
    pg: Database, nats: EventBus, nats_url: str, unique_prefix: str
) -> None:
    first = service(pg, nats)
    await first.start()
    # The publisher keeps going until the first consumer has stopped, then sends a
    # tail of 20 more calls: the stop always lands while events are still coming,
    # however late the consumer starts on a loaded machine.
    stopped = asyncio.Event()
    published = 0

    async def publisher() -> None:
        nonlocal published
        while not stopped.is_set():
            await publish_calls(nats, published, 1, pause=0.01)
            published += 1
        await publish_calls(nats, published, 20)
        published += 20

    task = asyncio.create_task(publisher())
    await wait_for(lambda: _at_least(pg, "acc", 20))
    await first.stop(0.0)  # in-flight events are not acked: delivered again
    stopped_at = await count(pg, "acc")
    stopped.set()
    await task
    # A new instance on its own connection picks up where the first stopped.
    bus2 = await open_bus(nats_url, prefix=unique_prefix)
    second = service(pg, bus2)
    await second.start()
    try:
        await wait_for(lambda: _at_least(pg, "cdrs WHERE end_time IS NOT NULL", published))
        await wait_for(lambda: _at_least(pg, "acc", 2 * published))
        await asyncio.sleep(0.3)  # anything still in flight would land now
        await assert_exactly(pg, published)
        assert stopped_at < 2 * published
        assert second.metrics.events.labels("recorded")._value.get() > 0
    finally:
        await second.stop(0.0)
        await bus2.close()


async def _at_least(db: Database, table: str, n: int) -> bool:
    return await count(db, table) >= n


async def test_crash_between_commit_and_ack_is_redelivered_without_duplicate(
    pg: Database, nats: EventBus
) -> None:
    crashed: list[int] = []

    async def crash_before_ack(message: Message, written: Written) -> None:
        # Committed, not yet acknowledged: fail as a dying process would, every
        # second event on its first delivery.
        if message.delivery_count == 1 and (message.stream_seq or 0) % 2 == 0:
            crashed.append(message.stream_seq or 0)
            raise RuntimeError("simulated crash after commit")

    metrics = AccountingMetrics(CollectorRegistry())
    consumer = AccountingConsumer(
        nats,
        RecordStore(pg, clock=lambda: T0),
        metrics,
        ack_wait=5.0,
        after_commit=crash_before_ack,
    )
    await consumer.start()
    try:
        await publish_calls(nats, 0, 25)
        await wait_for(lambda: _value(metrics, "duplicate", len(crashed)) if crashed else _false())
        await wait_for(lambda: _at_least(pg, "acc", 50))
        await assert_exactly(pg, 25)
        assert len(crashed) == 25  # half of 50 events crashed once each ...
        assert metrics.events.labels("duplicate")._value.get() == 25  # ... came back, skipped
    finally:
        await consumer.stop()


async def _value(metrics: AccountingMetrics, outcome: str, n: int) -> bool:
    return bool(metrics.events.labels(outcome)._value.get() >= n)


async def _false() -> bool:
    return False


async def test_two_instances_share_the_work_without_duplicates(
    pg: Database, nats: EventBus, nats_url: str, unique_prefix: str
) -> None:
    bus2 = await open_bus(nats_url, prefix=unique_prefix)
    a = service(pg, nats, workers=2, fetch_batch=4)
    b = service(pg, bus2, workers=2, fetch_batch=4)
    await a.start()
    await b.start()
    try:
        await publish_calls(nats, 0, 150)
        await wait_for(lambda: _at_least(pg, "events_processed", 300))
        await asyncio.sleep(0.3)
        await assert_exactly(pg, 150)
        done_a = a.metrics.events.labels("recorded")._value.get()
        done_b = b.metrics.events.labels("recorded")._value.get()
        assert done_a + done_b == 300
        assert done_a > 0
        assert done_b > 0
    finally:
        await a.stop(0.0)
        await b.stop(0.0)
        await bus2.close()


@pytest.mark.slow
async def test_postgres_down_events_wait_and_are_written_after(nats: EventBus) -> None:
    # Not under tmp_path: the cluster runs as the postgres user, who must reach it.
    server = PrivatePostgres(Path("/tmp") / f"sipmesh-acc-pg-{secrets.token_hex(4)}", free_port())
    server.init()
    server.start()
    try:
        db = await migrated(server.url)
        svc = service(db, nats)
        await svc.start()
        try:
            await publish_calls(nats, 0, 5)
            await wait_for(lambda: _at_least(db, "acc", 10))
            server.stop()
            await publish_calls(nats, 5, 20)
            await wait_for(lambda: _is_down(svc))
            assert not svc.ready()
            assert svc.metrics.db_errors._value.get() >= 1
            await asyncio.sleep(1.0)  # events keep waiting while it is down
            server.start()
            await wait_for(lambda: _at_least(db, "events_processed", 50), timeout=60)
            await asyncio.sleep(0.3)
            await assert_exactly(db, 25)
            await wait_for(lambda: _is_up(svc))
        finally:
            await svc.stop(0.0)
            await db.close()
    finally:
        server.stop()
        shutil.rmtree(server.dir.parent, ignore_errors=True)


async def _is_down(svc: AccountingService) -> bool:
    return not svc.consumer.db_ok


async def _is_up(svc: AccountingService) -> bool:
    return svc.consumer.db_ok and svc.ready()


@pytest.mark.slow
async def test_accounting_process_killed_while_calls_go_on(
    tmp_path: Path, pg: Database, pg_url: str
) -> None:
    """`sipmesh serve --target accounting` SIGKILLed mid-stream and started again."""
    nats_port = free_port()
    private_nats = nats_server(nats_port, tmp_path / "js")
    private_nats.start()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    # Publish as the runtime does: the bus prefix of the default namespace
    # (sipmesh/runtime/backends.py subject_prefix; none since the event subjects
    # already start with "sipmesh.").
    bus = await open_bus(nats_url, prefix=subject_prefix(SipmeshConfig()))
    await bus.ensure_stream("events", SUBJECTS)
    http_port = free_port()
    env = {**os.environ, "SIPMESH_ACCOUNTING__ACK_WAIT": "3"}
    argv = [
        sys.executable, "-m", "sipmesh", "serve", "--target", "accounting",
        "--db", pg_url, "--bus", nats_url, "--http", f"127.0.0.1:{http_port}",
    ]  # fmt: skip
    log = (tmp_path / "acc.log").open("ab")

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_port(http_port, timeout=30)
        return proc

    proc = spawn()
    try:
        publisher = asyncio.create_task(publish_calls(bus, 0, 150, pause=0.003))
        await wait_for(lambda: _at_least(pg, "acc", 30))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await publisher
        killed_at = await count(pg, "events_processed")
        proc = spawn()
        await wait_for(lambda: _at_least(pg, "events_processed", 300), timeout=60)
        await asyncio.sleep(0.5)
        await assert_exactly(pg, 150)
        assert killed_at < 300
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()
        await bus.delete_stream("events")
        await bus.close()
        private_nats.stop()
