"""Two presence instances sharing the real PostgreSQL, Redis and NATS: a change
stored by one instance is notified by the instance holding each subscription,
exactly once, and ownership follows a refresh to the other instance."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from sipmesh.presence.service import PresenceService
from sipmesh.presence.testing import DOMAIN, Harness, RecordingEdge, pidf
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.state.clock import FakeClock
from sipmesh.state.factory import open_bus, open_db, open_kv
from sipmesh.state.schema import migrate

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.nats]


@pytest.fixture
async def pair(
    postgres_url: str, redis_url: str, nats_url: str, unique_prefix: str
) -> AsyncIterator[tuple[Harness, Harness]]:
    clock = FakeClock()
    closers = []
    harnesses = []
    first_db = await open_db(postgres_url)
    await migrate(first_db)
    for n in (1, 2):
        db = first_db if n == 1 else await open_db(postgres_url)
        kv = open_kv(redis_url, prefix=unique_prefix + ":")
        bus = await open_bus(nats_url, prefix=unique_prefix)
        edge = RecordingEdge()
        service = PresenceService(
            config=PresenceConfig(initial_notify_delay_ms=0, sweep_interval=3600),
            instance_id=f"{unique_prefix}-pres{n}",
            db=db,
            kv=kv,
            bus=bus,
            edge=edge,
            clock=clock,
        )
        await service.start()
        harnesses.append(Harness(service, edge, clock))
        closers.append((service, db, kv, bus))
    yield harnesses[0], harnesses[1]
    for service, db, kv, bus in closers:
        await service.stop(1.0)
        await bus.close()
        await kv.close()
        await db.close()


async def test_publish_on_one_notifies_holder_on_other_exactly_once(
    pair: tuple[Harness, Harness],
) -> None:
    one, two = pair
    alice = f"alice{uuid.uuid4().hex[:8]}"
    bob_contact = "sip:bob@127.0.0.1:5080"
    r = await two.subscribe("bob", alice, port=5080, call_id=f"c-{alice}", from_tag="bt")
    assert r.status == 200
    await two.settle(lambda: len(two.edge.notifies(bob_contact)) == 1)

    await one.publish(alice, pidf(f"sip:{alice}@{DOMAIN}", "open"))
    await two.settle(lambda: len(two.edge.notifies(bob_contact)) == 2)
    await one.publish(alice, pidf(f"sip:{alice}@{DOMAIN}", "closed", tuple_id="t2"))
    await two.settle(lambda: len(two.edge.notifies(bob_contact)) == 3)
    await one.service.drain()
    got = two.edge.notifies(bob_contact)
    assert [n.cseq.seq for n in got] == [1, 2, 3]
    assert b"<basic>open</basic>" in got[1].body
    assert b"<basic>closed</basic>" in got[2].body
    assert one.edge.notifies(bob_contact) == []

    # The refresh reaches instance one: it takes the subscription over, and the next
    # change is notified by it alone, continuing the dialog's CSeq.
    refreshed = await one.subscribe(
        "bob",
        alice,
        port=5080,
        call_id=f"c-{alice}",
        from_tag="bt",
        to_tag=r.to.tag or "",
        cseq=2,
    )
    assert refreshed.status == 200
    await one.settle(lambda: len(one.edge.notifies(bob_contact)) == 1)
    assert one.edge.notifies(bob_contact)[0].cseq.seq == 4
    await two.publish(alice, pidf(f"sip:{alice}@{DOMAIN}", "open", tuple_id="t3"))
    await one.settle(lambda: len(one.edge.notifies(bob_contact)) == 2)
    await two.service.drain()
    assert one.edge.notifies(bob_contact)[1].cseq.seq == 5
    assert len(two.edge.notifies(bob_contact)) == 3
    assert all(
        s.presentity_uri != f"sip:{alice}@{DOMAIN}" for s in two.service.manager.owned.values()
    )


async def test_orphaned_subscription_is_adopted(pair: tuple[Harness, Harness]) -> None:
    one, two = pair
    alice = f"alice{uuid.uuid4().hex[:8]}"
    await one.subscribe("bob", alice, port=5081, call_id=f"o-{alice}", from_tag="bt")
    await one.settle(lambda: len(one.edge.notifies()) >= 1)
    # Instance one dies without a goodbye: its alive key expires (simulated here).
    await one.service.stop(0.5)
    await one.service.store.kv.delete("presence:alive:" + one.service.instance_id)
    adopted = await two.service.manager.adopt(two.service.now())
    assert adopted >= 1
    await one.publish(alice, pidf(f"sip:{alice}@{DOMAIN}", "open"))
    await two.settle(lambda: len(two.edge.notifies("sip:bob@127.0.0.1:5081")) == 1)
    notify = two.edge.notifies("sip:bob@127.0.0.1:5081")[0]
    assert b"<basic>open</basic>" in notify.body
    assert notify.cseq.seq == 2
