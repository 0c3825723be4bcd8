"""Custom scripts, safe hot reload, script errors and the time budget."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from sipmesh.gen.sipmesh.v1 import events_pb2, router_pb2
from sipmesh.router.runner import ScriptLoadError, load_script
from sipmesh.router.service import RouterService
from sipmesh.router.testing import DOMAIN, route_request, sip_request
from sipmesh.router.txstate import TxState
from sipmesh.state.bus_memory import MemoryBus

V1 = """
async def request_route(ctx):
    ctx.t_on_failure("on_fail")
    ctx.vars["who"] = "v1"
    ctx.relay("sip:bob@192.0.2.20")

def on_fail(ctx):
    ctx.reply(486, "Busy v1")
"""

V2 = """
def request_route(ctx):
    ctx.reply(480, "Version two")

def on_fail(ctx):
    ctx.reply(486, "Busy v2")
"""

BROKEN = """
def request_route(ctx)
    ctx.reply(200)
"""

RAISES = """
def helper(ctx):
    return 1 / 0  # line 3

def request_route(ctx):
    helper(ctx)
"""

SLOW = """
import asyncio

async def request_route(ctx):
    await asyncio.sleep(5)
    ctx.reply(200, "too late")
"""


def write(path: Path, source: str) -> str:
    path.write_text(textwrap.dedent(source))
    return str(path)


def invite() -> router_pb2.RouteRequest:
    return route_request(sip_request("INVITE", f"sip:bob@{DOMAIN}"))


async def test_custom_script_from_config_replaces_the_default(
    make_router: Any, tmp_path: Path
) -> None:
    router: RouterService = await make_router(script=write(tmp_path / "r.py", V2))
    decision = await router.route(invite())
    assert (decision.reply.code, decision.reply.reason) == (480, "Version two")
    info = router.version()
    assert info.path.endswith("r.py")
    assert len(info.hash) == 64


async def test_broken_reload_is_refused_and_old_version_keeps_serving(
    make_router: Any, tmp_path: Path
) -> None:
    path = tmp_path / "r.py"
    router: RouterService = await make_router(script=write(path, V2))
    before = router.version()
    write(path, BROKEN)
    result = await router.reload()
    assert not result.ok
    assert "r.py:2" in result.error
    assert "syntax" in result.error
    assert router.version() == before
    assert (await router.route(invite())).reply.reason == "Version two"


async def test_reload_of_a_script_without_request_route_is_refused(
    make_router: Any, tmp_path: Path
) -> None:
    router: RouterService = await make_router(script=write(tmp_path / "r.py", V2))
    result = await router.reload(write(tmp_path / "other.py", "def x(ctx):\n    pass\n"))
    assert not result.ok
    assert "request_route" in result.error


async def test_in_flight_transactions_finish_under_their_version(
    make_router: Any, tmp_path: Path
) -> None:
    path = tmp_path / "r.py"
    router: RouterService = await make_router(script=write(path, V1))
    first = await router.route(invite())
    assert first.relay.handlers.failure == "on_fail"
    v1 = router.version().hash
    assert TxState.decode(first.context).version == v1
    write(path, V2)
    result = await router.reload()
    assert result.ok
    assert result.changed
    assert router.version().hash != v1
    # A new request runs v2 ...
    assert (await router.route(invite())).reply.code == 480
    # ... the failure route of the transaction v1 started still runs v1.
    failure = invite()
    failure.kind = router_pb2.ROUTE_KIND_FAILURE
    failure.handler = "on_fail"
    failure.context = first.context
    failure.reply_status = 486
    decision = await router.route(failure)
    assert decision.reply.reason == "Busy v1"
    assert TxState.decode(decision.context).vars["who"] == "v1"


async def test_exception_answers_500_and_logs_the_script_line(
    make_router: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = write(tmp_path / "boom.py", RAISES)
    router: RouterService = await make_router(script=script)
    with caplog.at_level(logging.ERROR, logger="sipmesh.router"):
        decision = await router.route(invite())
    assert (decision.reply.code, decision.reply.reason) == (500, "Server Internal Error")
    assert f"{script}:3" in caplog.text
    assert "ZeroDivisionError" in caplog.text
    # The router keeps serving.
    assert (await router.route(invite())).reply.code == 500


async def test_time_budget_exceeded_answers_500(
    make_router: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = write(tmp_path / "slow.py", SLOW)
    router: RouterService = await make_router(script=script, script_timeout=0.05)
    with caplog.at_level(logging.ERROR, logger="sipmesh.router"):
        decision = await router.route(invite())
    assert decision.reply.code == 500
    assert "time budget" in caplog.text
    assert f"{script}:5" in caplog.text


async def test_broken_script_at_start_fails_the_start(make_router: Any, tmp_path: Path) -> None:
    with pytest.raises(ScriptLoadError):
        await make_router(script=write(tmp_path / "bad.py", BROKEN))


def test_load_script_by_module_name_and_import_errors(tmp_path: Path) -> None:
    default = load_script("sipmesh.router.default_script")
    assert default.handler("manage_failure") is not None
    assert default.handler("_match") is None
    with pytest.raises(ScriptLoadError, match="no such"):
        load_script("sipmesh.router.no_such_script")
    bad = write(tmp_path / "exits.py", "raise SystemExit(3)\n")
    with pytest.raises(ScriptLoadError, match="SystemExit"):
        load_script(bad)


async def test_bus_broadcast_reloads_every_instance(make_router: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.py"
    write(path, V1)
    bus = MemoryBus(prefix="t")
    routers: list[RouterService] = [await make_router(script=str(path), bus=bus) for _ in range(2)]
    outcomes: list[events_pb2.ReloadEvent] = []
    done = asyncio.Event()

    async def collect(message: Any) -> None:
        env = events_pb2.Envelope()
        env.ParseFromString(message.data)
        if not env.reload.request:
            outcomes.append(env.reload)
            if len(outcomes) == 2:
                done.set()

    await bus.subscribe("reload.script", collect)
    write(path, V2)
    request = events_pb2.Envelope(
        id="r1", reload=events_pb2.ReloadEvent(what="script", request=True)
    )
    await bus.publish("reload.script", request.SerializeToString())
    async with asyncio.timeout(5):
        await done.wait()
    assert all(o.ok for o in outcomes)
    assert {o.version for o in outcomes} == {r.version().hash for r in routers}
    for router in routers:
        assert (await router.route(invite())).reply.code == 480
    await bus.close()
