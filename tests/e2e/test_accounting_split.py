"""Accounting as its own process, stopped while sipp calls go on (issue 9).

`sipmesh serve --target edge,router,registrar` carries the calls and publishes their
events on NATS JetStream; `sipmesh serve --target accounting` writes them to
PostgreSQL. While sipp places calls, the accounting process is stopped (SIGTERM, or
SIGKILL — which can fall between a commit and its acknowledgement), some calls
happen without it, it is started again, and every record must then be there exactly
once: the events waited in the stream, redeliveries wrote nothing twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from pathlib import Path

import pytest

from sipmesh.state.factory import open_db
from tests.e2e.procs import SipmeshProcess, free_port
from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_accounting_calls import (
    Backends,
    provision,
    sipmesh_process,
)
from tests.e2e.test_accounting_calls import pg_database as pg_database  # the fixture
from tests.e2e.test_accounting_calls import servers as servers  # the fixture
from tests.e2e.test_call_sipp import DOMAIN, inject, register_at
from tests.e2e.test_routing_features import Peer, peer
from tests.e2e.test_routing_features import peers as peers  # the fixture

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.nats,
]

CALLS = 60
RATE = 10  # calls per second: the load lasts about CALLS / RATE seconds


async def _counts(db_url: str) -> dict[str, int]:
    db = await open_db(db_url)
    try:
        queries = {
            "acc": "SELECT COUNT(*) FROM acc",
            "acc_distinct": "SELECT COUNT(*) FROM (SELECT DISTINCT callid, method FROM acc) d",
            "acc_invite": "SELECT COUNT(*) FROM acc WHERE method = 'INVITE' AND sip_code = '200'",
            "acc_bye": "SELECT COUNT(*) FROM acc WHERE method = 'BYE' AND sip_code = '200'",
            "cdrs": "SELECT COUNT(*) FROM cdrs",
            "cdrs_distinct": "SELECT COUNT(DISTINCT call_id) FROM cdrs",
            "cdrs_bye": "SELECT COUNT(*) FROM cdrs WHERE end_reason = 'bye' AND status = 200"
            " AND answer_time IS NOT NULL AND duration >= 0.2",
            "missed": "SELECT COUNT(*) FROM missed_calls",
        }
        return {name: int(await db.fetchval(sql)) for name, sql in queries.items()}
    finally:
        await db.close()


def counts(db_url: str) -> dict[str, int]:
    return asyncio.run(_counts(db_url))


def wait_complete(db_url: str, timeout: float = 60.0) -> dict[str, int]:
    """Poll until every call's records are in (bounded), then once more after a pause."""
    deadline = time.monotonic() + timeout
    seen = counts(db_url)
    while time.monotonic() < deadline:
        if seen["acc"] >= 2 * CALLS and seen["cdrs_bye"] >= CALLS:
            time.sleep(3.0)  # redeliveries still on their way would show up now
            return counts(db_url)
        time.sleep(0.2)
        seen = counts(db_url)
    raise AssertionError(f"records incomplete after {timeout}s: {seen}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
def test_accounting_stopped_during_calls_writes_every_record_once(
    workdir: Path, peers: list[Peer], servers: Backends, sig: signal.Signals
) -> None:
    core = sipmesh_process(
        workdir,
        "core",
        "edge,router,registrar",
        servers,
        {"edge": {"trusted_sources": ["127.0.0.1"]}},  # the load comes from one address
    )
    # A short ack_wait so that what a killed instance had fetched but not acknowledged
    # is redelivered soon (JetStream redelivers after ack_wait).
    accounting_config: dict[str, object] = {"accounting": {"ack_wait": 3.0}}
    accounting = sipmesh_process(workdir, "accounting", "accounting", servers, accounting_config)
    restarted: SipmeshProcess | None = None
    core.start()
    accounting.start()
    try:
        core.wait_ready()
        accounting.wait_ready()
        provision(servers.db)
        bob_port = free_port()
        register_at(core, workdir, "bob", "bob-pw", bob_port, "u1")
        bob = peer(peers, workdir, "uas_answer.xml", "bob", bob_port)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                run_sipp,
                f"127.0.0.1:{core.sip_port}",
                scenario="call_auth.xml",
                workdir=workdir / "load",
                inf=inject(workdir, "load.csv", f"alice;{DOMAIN};bob"),
                local_port=free_port(),
                extra=["-au", "alice", "-ap", "alice-pw", "-l", "20"],
                calls=CALLS,
                rate=RATE,
                timeout=60,
            )
            # Let some calls be recorded, then take accounting away mid-load.
            deadline = time.monotonic() + 20
            while counts(servers.db)["acc"] < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
            before_stop = counts(servers.db)
            assert before_stop["acc"] >= 10
            if sig == signal.SIGKILL:
                accounting.kill()
            else:
                assert accounting.stop(sig) == 0, accounting.log()
            assert not load.done(), "the load ended before accounting was stopped"
            time.sleep(1.5)  # calls go on without accounting
            during_outage = counts(servers.db)
            restarted = sipmesh_process(
                workdir, "accounting2", "accounting", servers, accounting_config
            )
            restarted.start()
            restarted.wait_ready()
            assert not load.done(), "the load ended before accounting came back"
            result = load.result(90)
        assert isinstance(result, SippResult)
        assert result.failed == 0, result.output + core.log()
        assert result.successful == CALLS
        assert len(bob.invites()) == CALLS

        final = wait_complete(servers.db)
        # Every answered call: its INVITE and its BYE in acc, one CDR ended by the BYE
        # (call_auth.xml holds the call 200 ms), and nothing twice.
        assert final == {
            "acc": 2 * CALLS,
            "acc_distinct": 2 * CALLS,
            "acc_invite": CALLS,
            "acc_bye": CALLS,
            "cdrs": CALLS,
            "cdrs_distinct": CALLS,
            "cdrs_bye": CALLS,
            "missed": 0,
        }
        # Calls were placed while accounting was away (their records came afterwards).
        assert during_outage["acc"] < 2 * CALLS
    finally:
        if restarted is not None:
            restarted.stop()
        accounting.kill()
        core.stop()
