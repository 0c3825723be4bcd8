"""``create(runtime)``: the router started by the module manager like `sipmesh serve`."""

from __future__ import annotations

from pathlib import Path

from sipmesh.clients.interfaces import RouterClient
from sipmesh.router.service import RouterService
from sipmesh.router.testing import route_request, sip_request
from sipmesh.runtime.config import load_config
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.modules import ModuleManager
from sipmesh.runtime.registry import default_modules


async def test_router_target_starts_and_routes(tmp_path: Path) -> None:
    config = load_config(
        env={},
        overrides={
            "target": ["router"],
            "db": f"sqlite:///{tmp_path / 'm.sqlite'}",
            "http": "127.0.0.1:0",
            "grpc": "127.0.0.1:0",
            "domains": ["example.com"],
            "listen": ["udp:127.0.0.1:5070"],
        },
    )
    manager = ModuleManager(default_modules())
    runtime = Runtime(config, manager)
    await manager.start(config.targets(), runtime)
    try:
        router = runtime.get("router", RouterService)
        assert isinstance(router, RouterClient)
        assert manager.ready()
        foreign = sip_request("INVITE", "sip:x@elsewhere.test", from_uri="sip:y@evil.test")
        decision = await router.route(route_request(foreign))
        assert (decision.reply.code, decision.reply.reason) == (403, "Not relaying")
        # No registrar in this process and no endpoint: REGISTER gets 500, not silence.
        reg = sip_request("REGISTER", "sip:example.com", to_uri="sip:alice@example.com")
        assert (await router.route(route_request(reg))).reply.code == 500
        # The listener address is "myself".
        assert router.env.myself.host_is_mine("127.0.0.1", 5070)
        await router.cfg_set("pstn", "gw_ip", "192.0.2.1")
        assert router.cfg_get("pstn", "gw_ip") == [("pstn", "gw_ip", "192.0.2.1")]
    finally:
        await manager.stop(grace=1)
