#!/usr/bin/env python3
"""How many events per second one accounting instance writes to PostgreSQL.

Publishes ``--calls`` answered calls (INVITE + BYE TransactionEvents, as the edge
does) on NATS JetStream first, then starts one accounting service on a fresh
PostgreSQL database and times how long it takes to record them all (acc rows,
events_processed keys, closed CDRs). Prints events/s. Not a test: see
tests/bench/test_bench_accounting.py for the smoke run.

    .venv/bin/python bench/bench_accounting.py --calls 5000 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from prometheus_client import CollectorRegistry

from sipmesh.accounting.service import AccountingService
from sipmesh.accounting.testing import call_events
from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.state.factory import open_bus, open_db
from sipmesh.state.schema import migrate

SUBJECTS = ["sipmesh.transaction.>", "sipmesh.dialog.>"]


async def admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> None:
    name = f"bench_acc_{secrets.token_hex(4)}"
    prefix = f"benchacc{secrets.token_hex(3)}"
    await admin(args.postgres, f'CREATE DATABASE "{name}"')
    parts = urlsplit(args.postgres)
    db_url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    db = await open_db(db_url)
    bus = await open_bus(args.nats, prefix=prefix)
    try:
        await migrate(db)
        await bus.ensure_stream("events", SUBJECTS)
        t0 = time.time() - 3600
        for i in range(args.calls):
            for env in call_events("answered", f"bench-{i}", t0 + i * 0.01, talk=5.0):
                subject = f"sipmesh.transaction.{env.transaction.method}"
                await bus.publish(subject, env.SerializeToString())
        await bus.ping()
        events = 2 * args.calls
        config = AccountingConfig(workers=args.workers, fetch_batch=args.batch)
        service = AccountingService(config, db=db, bus=bus, metrics=CollectorRegistry())
        start = time.perf_counter()
        await service.start()
        try:
            async with asyncio.timeout(args.timeout):
                while int(await db.fetchval("SELECT COUNT(*) FROM events_processed")) < events:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            elapsed = time.perf_counter() - start
            await service.stop(1.0)
        acc = int(await db.fetchval("SELECT COUNT(*) FROM acc"))
        cdrs = int(await db.fetchval("SELECT COUNT(*) FROM cdrs WHERE end_reason = 'bye'"))
        print(f"calls: {args.calls}  events: {events}  workers: {args.workers}")
        print(f"acc rows: {acc}  closed cdrs: {cdrs}")
        print(f"accounting to PostgreSQL: {events / elapsed:.0f} events/s ({elapsed:.2f} s)")
    finally:
        await bus.delete_stream("events")
        await bus.close()
        await db.close()
        await admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
