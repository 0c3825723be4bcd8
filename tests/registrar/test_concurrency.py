"""Two registrar instances, one AOR, concurrent REGISTERs (issue 5, "done when").

Each instance has its own store connection (Redis: its own connection pool); the
user agents' requests interleave freely. Whatever the interleaving, the AOR ends with
exactly the bindings the last request of each UA defines: no lost update.
"""

from __future__ import annotations

import asyncio
import random

from sipmesh.registrar.core import SourceFacts
from sipmesh.registrar.service import RegistrarService
from sipmesh.registrar.testing import DOMAIN, MakeService, make_register

AOR = f"alice@{DOMAIN}"


async def _ua(
    index: int, plan: list[int], instances: list[RegistrarService], statuses: list[int]
) -> None:
    contact = f"<sip:alice@192.0.2.{index + 1}:5060>"
    for cseq, expires in enumerate(plan, start=1):
        target = instances[(index + cseq) % len(instances)]
        req = make_register(AOR, [contact], call_id=f"ua-{index}", cseq=cseq, expires=expires)
        res = await target.save(req, SourceFacts(remote_host=f"192.0.2.{index + 1}"))
        statuses.append(res.response.status)
        await asyncio.sleep(0)


async def test_concurrent_registers_on_two_instances_lose_nothing(
    make_service: MakeService,
) -> None:
    one = await make_service(auth_register=False)
    two = await make_service(auth_register=False)
    rng = random.Random(5)
    plans = [[rng.choice([0, 600, 3600]) for _ in range(4)] for _ in range(24)]
    statuses: list[int] = []
    await asyncio.wait_for(
        asyncio.gather(*(_ua(i, p, [one, two], statuses) for i, p in enumerate(plans))), 60
    )
    assert set(statuses) == {200}
    expected = {f"sip:alice@192.0.2.{i + 1}:5060" for i, p in enumerate(plans) if p[-1] != 0}
    for instance in (one, two):
        got = {b.contact for b in await instance.store.get(AOR)}
        assert got == expected
    # Each binding carries the last request's CSeq.
    assert {b.cseq for b in await one.store.get(AOR)} == {4}
