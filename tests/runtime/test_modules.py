"""The module manager: planning, ordering, failure and readiness."""

from __future__ import annotations

import pytest

from sipmesh.runtime.config import load_config
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.lifecycle import Lifecycle, ServiceState
from sipmesh.runtime.modules import ModuleError, ModuleManager, ModuleSpec


class Recorder:
    """A module that records the order of lifecycle calls."""

    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail
        self.is_ready = True

    async def start(self) -> None:
        if self.fail:
            raise OSError("address already in use")
        self.log.append(f"start {self.name}")

    async def stop(self, grace: float) -> None:
        self.log.append(f"stop {self.name}")

    def ready(self) -> bool:
        return self.is_ready


def make_specs(log: list[str], fail: str = "") -> list[ModuleSpec]:
    def spec(name: str, **kw: object) -> ModuleSpec:
        return ModuleSpec(name, lambda _rt: Recorder(name, log, fail=name == fail), **kw)  # type: ignore[arg-type]

    return [
        spec("http"),
        spec("kv"),
        spec("bus"),
        spec("grpc-server", frontend=True),
        spec("router", depends_on=("kv", "bus", "grpc-server")),
        spec("edge", depends_on=("http", "kv", "grpc-server"), uses=("router",)),
    ]


def test_plan_adds_dependencies_orders_them_and_puts_frontends_last() -> None:
    manager = ModuleManager(make_specs([]))
    plan = manager.plan(["edge", "router"])
    assert plan[-1] == "grpc-server"
    assert plan.index("kv") < plan.index("router") < plan.index("edge")
    assert set(plan) == {"http", "kv", "bus", "grpc-server", "router", "edge"}


def test_soft_dependency_orders_only_when_planned() -> None:
    manager = ModuleManager(make_specs([]))
    assert "router" not in manager.plan(["edge"])


def test_unknown_module_and_cycles_are_errors() -> None:
    manager = ModuleManager(make_specs([]))
    with pytest.raises(ModuleError, match="unknown module 'nosuch'"):
        manager.plan(["nosuch"])
    cyclic = ModuleManager(
        [
            ModuleSpec("a", lambda _rt: Recorder("a", []), depends_on=("b",)),
            ModuleSpec("b", lambda _rt: Recorder("b", []), depends_on=("a",)),
        ]
    )
    with pytest.raises(ModuleError, match="cycle"):
        cyclic.plan(["a"])


async def test_start_and_stop_in_reverse_order() -> None:
    log: list[str] = []
    manager = ModuleManager(make_specs(log))
    runtime = Runtime(load_config(env={}), manager)
    await manager.start(["edge", "router"], runtime)
    assert all(s is ServiceState.RUNNING for s in manager.states().values())
    assert manager.ready()
    started = [line.split()[1] for line in log]
    await manager.stop(grace=1)
    stopped = [line.split()[1] for line in log[len(started) :]]
    assert stopped == list(reversed(started))
    assert all(s is ServiceState.TERMINATED for s in manager.states().values())
    assert runtime.has("edge")


async def test_failed_start_stops_what_started_and_names_the_module() -> None:
    log: list[str] = []
    manager = ModuleManager(make_specs(log, fail="router"))
    runtime = Runtime(load_config(env={}), manager)
    with pytest.raises(ModuleError, match="router: address already in use"):
        await manager.start(["edge", "router"], runtime)
    states = manager.states()
    assert states["router"] is ServiceState.FAILED
    assert states["edge"] is ServiceState.TERMINATED  # never started
    # The failed module is stopped first to release what it half-acquired, then
    # everything that started, in reverse order.
    assert [line for line in log if line.startswith("stop")] == [
        "stop router",
        *(f"stop {line.split()[1]}" for line in reversed(log) if line.startswith("start")),
    ]


async def test_readiness_follows_the_services() -> None:
    manager = ModuleManager(make_specs([]))
    runtime = Runtime(load_config(env={}), manager)
    assert not manager.ready()  # nothing planned yet
    await manager.start(["router"], runtime)
    assert manager.ready()
    from sipmesh.runtime.lifecycle import Service

    kv = runtime.get("kv", Service)
    assert isinstance(kv, Recorder)
    kv.is_ready = False
    assert not manager.ready()
    assert not manager.service_ready("kv")
    await manager.stop(grace=1)
    assert not manager.ready()


def test_lifecycle_rejects_illegal_transitions() -> None:
    lifecycle = Lifecycle()
    with pytest.raises(RuntimeError, match="new → running"):
        lifecycle.move(ServiceState.RUNNING)
    lifecycle.move(ServiceState.STARTING)
    lifecycle.move(ServiceState.RUNNING)
    lifecycle.move(ServiceState.STOPPING)
    lifecycle.move(ServiceState.TERMINATED)
    with pytest.raises(RuntimeError):
        lifecycle.move(ServiceState.STARTING)
