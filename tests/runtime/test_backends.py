"""The shared-state modules start on the embedded and the real backends, and fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipmesh.runtime.backends import BusModule, DbModule, KvModule, LocationModule
from sipmesh.runtime.config import load_config
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.modules import ModuleError, ModuleManager
from sipmesh.runtime.registry import default_modules

BACKENDS = ["kv", "location", "db", "bus"]


async def _start(env: dict[str, str]) -> tuple[ModuleManager, Runtime]:
    manager = ModuleManager(default_modules())
    runtime = Runtime(load_config(env=env), manager)
    await manager.start(BACKENDS, runtime)
    return manager, runtime


async def test_embedded_backends(tmp_path: Path) -> None:
    manager, runtime = await _start({"SIPMESH_DB": f"sqlite:///{tmp_path / 'x.sqlite'}"})
    try:
        assert manager.ready()
        await runtime.get("kv", KvModule).store.set("k", b"v")
        assert await runtime.get("kv", KvModule).store.get("k") == b"v"
        # The schema is created on start: Kamailio's subscriber table is there.
        db = runtime.get("db", DbModule).db
        assert await db.fetchval("SELECT count(*) FROM subscriber") == 0
        assert await runtime.get("location", LocationModule).store.count() == 0
        runtime.get("bus", BusModule).bus  # noqa: B018 - started
    finally:
        await manager.stop(1)
    assert (tmp_path / "x.sqlite").exists()


async def test_shared_backends(redis_url: str, postgres_url: str, nats_url: str) -> None:
    manager, runtime = await _start(
        {"SIPMESH_STATE": redis_url, "SIPMESH_DB": postgres_url, "SIPMESH_BUS": nats_url}
    )
    try:
        assert manager.ready()
        db = runtime.get("db", DbModule).db
        assert db.dialect == "postgresql"
        # The session's database is shared with other tests: ask for a row no one wrote.
        assert (
            await db.fetchval("SELECT count(*) FROM location WHERE username = $1", "nobody-here")
            == 0
        )
        await runtime.get("bus", BusModule).bus.ping()
    finally:
        await manager.stop(1)


@pytest.mark.parametrize(
    ("env", "module"),
    [
        ({"SIPMESH_STATE": "redis://127.0.0.1:1/0"}, "kv"),
        ({"SIPMESH_BUS": "nats://127.0.0.1:1"}, "bus"),
        ({"SIPMESH_DB": "postgresql://postgres@127.0.0.1:1/x"}, "db"),
    ],
)
async def test_unreachable_backend_fails_start_naming_the_module(
    env: dict[str, str], module: str, tmp_path: Path
) -> None:
    env = {"SIPMESH_DB": f"sqlite:///{tmp_path / 'x.sqlite'}", **env}
    with pytest.raises(ModuleError, match=rf"^{module}: "):
        await _start(env)
