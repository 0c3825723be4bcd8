"""Memory scenario: RSS of a registrar holding N registered contacts.

Run as ``python -m bench.lib.memory --contacts 100000``. The registrar service is
built in this process exactly as ``sipmesh serve --target registrar`` builds it
with the embedded backends (memory location store and KV, SQLite database,
``db_mode=none``: location in memory only, as Kamailio's usrloc ``db_mode=0``), and
every contact is saved through the registrar's own ``save()`` API (the REGISTER
processing of RFC 3261 §10.3, authentication off): "direct inserts through the
registrar's API in-process", which takes seconds where 100,000 sipp REGISTERs
would take minutes. Prints one JSON line: RSS before/after and bytes per contact.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from sipmesh.registrar.api import Registrar
from sipmesh.registrar.core import SourceFacts
from sipmesh.registrar.testing import make_register
from sipmesh.runtime.sections.registrar import RegistrarConfig
from sipmesh.state.bus_memory import MemoryBus
from sipmesh.state.factory import open_db
from sipmesh.state.kv_memory import MemoryKV
from sipmesh.state.location_memory import MemoryLocationStore
from sipmesh.state.schema import migrate


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def fill(contacts: int, domain: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = await open_db(f"sqlite:///{Path(tmp) / 'mem.sqlite'}")
        await migrate(db)
        bus = MemoryBus()
        registrar = Registrar(
            config=RegistrarConfig(db_mode="none", auth_register=False),
            domains=(domain,),
            instance_id="bench-memory",
            store=MemoryLocationStore(),
            kv=MemoryKV(),
            db=db,
            bus=bus,
            registry=CollectorRegistry(),
            clock=time.time,
            run_timer=False,
        )
        await registrar.start()
        gc.collect()
        before = rss_kb()
        started = time.monotonic()
        for i in range(contacts):
            host = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            request = make_register(
                f"m{i}@{domain}",
                [f"<sip:m{i}@{host}:5060;transport=udp>"],
                call_id=f"mem-{i}@bench",
                expires=3600,
            )
            facts = SourceFacts(remote_host=host, remote_port=5060, transport="udp")
            result = await registrar.save(request, facts, authenticate=False)
            if result.response.status != 200:
                raise RuntimeError(f"contact {i}: {result.response.status}")
        elapsed = time.monotonic() - started
        gc.collect()
        after = rss_kb()
        stored = await registrar.store.count() if hasattr(registrar, "store") else contacts
        await registrar.stop(1.0)
        await bus.close()
        await db.close()
    return {
        "contacts": contacts,
        "stored": float(stored),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "bytes_per_contact": (after - before) * 1024 / contacts,
        "fill_seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--domain", default="bench.test")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(fill(args.contacts, args.domain))))


if __name__ == "__main__":
    main()
