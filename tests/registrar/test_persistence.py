"""usrloc db_mode on SQLite and the real PostgreSQL, with memory and Redis stores."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sipmesh.registrar.core import SourceFacts
from sipmesh.registrar.persistence import read_all
from sipmesh.registrar.service import LOCATION_LOADED_KEY, RegistrarService
from sipmesh.registrar.testing import MakeService, Stores, make_register
from sipmesh.state.clock import FakeClock
from sipmesh.state.db import Database
from sipmesh.state.factory import open_db
from sipmesh.state.location import Binding
from sipmesh.state.schema import migrate

FACTS = SourceFacts(
    remote_host="198.51.100.7",
    remote_port=40001,
    transport="tcp",
    socket="tcp:203.0.113.1:5060",
    edge_id="edge-a",
    flow_id="flow-17",
    flow_token="tok",
    nat_detected=True,
)
INST = '"<urn:uuid:aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee>"'


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    # Synchronous: the session's postgres_url fixture runs its own event loop.
    return "" if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(db_url: str, sqlite_db: Database) -> AsyncIterator[Database]:
    if not db_url:
        yield sqlite_db
        return
    pg = await open_db(db_url)
    await migrate(pg)
    yield pg
    await pg.close()


def _domain(stores: Stores) -> str:
    # Each test its own domain: the PostgreSQL database is shared by the session.
    return f"{stores.prefix.strip(':').lower()}.example.com"


async def _register_some(reg: RegistrarService, domain: str) -> None:
    for user in ("alice", "bob"):
        req = make_register(
            f"{user}@{domain}",
            [
                f"<sip:{user}@10.0.0.9:5060;transport=tcp>;q=0.7;+sip.instance={INST};reg-id=1",
                f"<sip:{user}@10.0.0.10>",
            ],
            expires=600,
            extra=[("Path", "<sip:p1.example.com;lr;ob>"), ("Supported", "path, outbound")],
        )
        res = await reg.save(req, FACTS)
        assert res.response.status == 200


def _mine(bindings: list[Binding], domain: str) -> list[Binding]:
    # Start-up loads every row of the table; the session's PostgreSQL has other tests'.
    return [b for b in bindings if b.aor.endswith("@" + domain)]


def _snapshot(bindings: list[Binding]) -> list[tuple[object, ...]]:
    return sorted(
        (
            b.aor,
            b.contact,
            round(b.expires_at, 3),
            b.q,
            b.call_id,
            b.cseq,
            b.path,
            b.received,
            b.transport,
            b.socket,
            b.edge_id,
            b.flow_id,
            b.instance,
            b.reg_id,
            b.ruid,
            b.attrs,
        )
        for b in bindings
    )


async def test_write_through_restart_keeps_every_binding(
    make_service: MakeService, stores: Stores, db: Database
) -> None:
    domain = _domain(stores)
    first = await make_service(
        db=db, db_mode="write-through", domains=(domain,), auth_register=False
    )
    await _register_some(first, domain)
    before = _mine(await first.show(), domain)
    assert len(before) == 4
    await first.stop(1.0)
    # The whole location store is lost (Redis flushed of our prefix / a new process).
    for aor in await first.store.list_aors():
        await first.store.remove(aor)
    await first.kv.delete(LOCATION_LOADED_KEY)  # lost with the store (same Redis/process)
    stores._mem_loc = None
    second = await make_service(
        db=db, db_mode="write-through", domains=(domain,), auth_register=False
    )
    after = _mine(await second.show(), domain)
    assert _snapshot(after) == _snapshot(before)
    assert after[0].received == "sip:198.51.100.7:40001;transport=tcp"


async def test_start_with_a_live_store_does_not_load_the_lagging_table(
    make_service: MakeService, stores: Stores, db: Database
) -> None:
    """write-back: a binding removed on one instance since the last flush stays
    removed when another instance starts while the store keeps its bindings."""
    domain = _domain(stores)
    first = await make_service(db=db, db_mode="write-back", domains=(domain,), auth_register=False)
    await _register_some(first, domain)
    await first.timer_tick()  # the table has alice and bob
    await first.remove(f"bob@{domain}")  # not flushed yet
    second = await make_service(db=db, db_mode="write-back", domains=(domain,), auth_register=False)
    assert sorted({b.aor for b in _mine(await second.show(), domain)}) == [f"alice@{domain}"]


async def test_write_back_flushes_on_timer_and_stop(
    make_service: MakeService, stores: Stores, db: Database
) -> None:
    domain = _domain(stores)
    reg = await make_service(db=db, db_mode="write-back", domains=(domain,), auth_register=False)
    await _register_some(reg, domain)
    rows = await read_all(db, True, reg.clock())
    assert [a for a in rows if a.endswith(domain)] == []
    await reg.timer_tick()
    rows = await read_all(db, True, reg.clock())
    assert sorted(a for a in rows if a.endswith(domain)) == [f"alice@{domain}", f"bob@{domain}"]
    await reg.remove(f"bob@{domain}")
    await reg.stop(1.0)
    rows = await read_all(db, True, reg.clock())
    assert sorted(a for a in rows if a.endswith(domain)) == [f"alice@{domain}"]


async def test_expired_bindings_leave_the_table(
    make_service: MakeService, stores: Stores, db: Database, clock: FakeClock
) -> None:
    domain = _domain(stores)
    reg = await make_service(db=db, db_mode="write-through", domains=(domain,), auth_register=False)
    await _register_some(reg, domain)
    clock.advance(601)
    expired = _mine(await reg.timer_tick(), domain)
    assert len(expired) == 4
    count = await db.fetchval("SELECT COUNT(*) FROM location WHERE domain = $1", domain)
    assert count == 0
    assert await db.fetchval("SELECT COUNT(*) FROM location_attrs WHERE domain = $1", domain) == 0


async def test_db_mode_none_writes_nothing(
    make_service: MakeService, stores: Stores, db: Database
) -> None:
    domain = _domain(stores)
    reg = await make_service(db=db, db_mode="none", domains=(domain,), auth_register=False)
    await _register_some(reg, domain)
    await reg.timer_tick()
    assert await db.fetchval("SELECT COUNT(*) FROM location WHERE domain = $1", domain) == 0
