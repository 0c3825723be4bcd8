"""Offline messages end to end (issue 8, msilo): a MESSAGE to a user without a
binding is stored (202) and delivered when the user registers, in order, each
removed only after a 2xx — through `sipmesh serve`, one process and split (see
test_presence_sipp.py for the deployments)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipmesh.state.factory import open_db
from tests.e2e.procs import free_port
from tests.e2e.test_presence_sipp import (
    DOMAIN,
    Deployment,
    inject,
    one_process,
    register,
    run_agent,
    split_deployment,
    start_agent,
    wait_for,
)

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]


@pytest.fixture(params=["one", "split"])
def deployment(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Deployment]:
    made = one_process(workdir) if request.param == "one" else split_deployment(request, workdir)
    try:
        yield made
    finally:
        made.stop()


async def _silo(db_url: str, user: str, status: int | None = None) -> int:
    """Messages waiting for ``user`` (with that status: 0 waiting, 1 being sent)."""
    db = await open_db(db_url)
    try:
        if status is not None:
            count = await db.fetchval(
                "SELECT COUNT(*) FROM silo WHERE username=$1 AND status=$2", user, status
            )
        else:
            count = await db.fetchval("SELECT COUNT(*) FROM silo WHERE username=$1", user)
        return int(count or 0)
    finally:
        await db.close()


def test_offline_message_stored_then_delivered_on_register(
    deployment: Deployment, workdir: Path
) -> None:
    """RFC 3428 + msilo: 202 for an offline user, delivery in order on REGISTER."""
    d = deployment
    run_agent(
        d,
        workdir,
        "messages",
        "presence_message.xml",
        inject(
            workdir,
            "m.csv",
            f"alice;{DOMAIN};carol;first note",
            f"alice;{DOMAIN};carol;second note",
        ),
        "alice",
        calls=2,
        rate=1000,
    )
    assert asyncio.run(_silo(d.db_url, "carol")) == 2
    carol_port = free_port()
    carol = start_agent(d, workdir, "carol-uas", "uas_message.xml", port=carol_port, calls=0)
    try:
        register(d, workdir, "carol", carol_port)
        wait_for(
            "two MESSAGEs at carol",
            lambda: len(carol.received("MESSAGE")) >= 2,
            15,
            d.logs,
        )
        wait_for("the silo emptied", lambda: asyncio.run(_silo(d.db_url, "carol")) == 0, 10, d.logs)
    finally:
        carol.kill()
    delivered = carol.received("MESSAGE")
    assert [m.body for m in delivered] == ["first note", "second note"]
    for message in delivered:
        assert message.start.startswith(f"MESSAGE sip:carol@127.0.0.1:{carol_port}")
        assert f"sip:alice@{DOMAIN}" in message.get("From")
        assert message.get("Date"), "msilo puts the original time in Date"


def test_offline_message_kept_until_a_2xx(deployment: Deployment, workdir: Path) -> None:
    """msilo: a stored MESSAGE the contact refuses (486) stays in the silo and is
    delivered at the next registration, then removed (issue 8: only after a 2xx)."""
    d = deployment
    run_agent(
        d,
        workdir,
        "message",
        "presence_message.xml",
        inject(workdir, "m.csv", f"alice;{DOMAIN};carol;try again"),
        "alice",
    )
    port = free_port()
    busy = start_agent(d, workdir, "carol-busy", "uas_message_busy.xml", port=port, calls=0)
    try:
        register(d, workdir, "carol", port)
        wait_for("the MESSAGE at the busy UA", lambda: bool(busy.received("MESSAGE")), 15, d.logs)
    finally:
        busy.kill()
    # The 486 went back to presence: the message is released, not deleted.
    wait_for(
        "the message released",
        lambda: asyncio.run(_silo(d.db_url, "carol", status=0)) == 1,
        10,
        d.logs,
    )
    carol = start_agent(d, workdir, "carol-uas", "uas_message.xml", port=port, calls=0)
    try:
        register(d, workdir, "carol", port)
        wait_for("the MESSAGE delivered", lambda: bool(carol.received("MESSAGE")), 15, d.logs)
        wait_for("the silo emptied", lambda: asyncio.run(_silo(d.db_url, "carol")) == 0, 10, d.logs)
    finally:
        carol.kill()
    assert [m.body for m in carol.received("MESSAGE")] == ["try again"]
