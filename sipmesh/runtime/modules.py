"""The module manager: which services run in this process, in which order.

A module is a named factory with dependencies. ``sipmesh serve --target edge,router``
asks for two targets; the manager adds what they depend on (``state``, ``bus``,
``grpc-server``…), starts everything in dependency order and stops it in reverse.
Soft dependencies (``uses``) only order modules that happen to run in the same
process: the edge uses the router, but when the router runs elsewhere the edge
reaches it over gRPC instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipmesh.runtime.lifecycle import Lifecycle, Service, ServiceState

if TYPE_CHECKING:
    from sipmesh.runtime.context import Runtime

log = logging.getLogger("sipmesh.runtime")

Factory = Callable[["Runtime"], Service | Awaitable[Service]]


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    factory: Factory
    depends_on: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    # Started after every other module and stopped before them: servers that expose
    # the others (gRPC must have every servicer registered before it starts).
    frontend: bool = False
    internal: bool = False


class ModuleError(Exception):
    """A module could not be planned or started; the message says which and why."""


@dataclass
class _Running:
    spec: ModuleSpec
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    service: Service | None = None


class ModuleManager:
    def __init__(self, specs: Iterable[ModuleSpec]) -> None:
        self._specs: dict[str, ModuleSpec] = {s.name: s for s in specs}
        self._order: list[str] = []
        self._running: dict[str, _Running] = {}

    @property
    def specs(self) -> Mapping[str, ModuleSpec]:
        return self._specs

    def plan(self, targets: Iterable[str]) -> list[str]:
        """Targets plus their dependencies, dependencies first, frontends last."""
        wanted: set[str] = set()

        def add(name: str, chain: tuple[str, ...]) -> None:
            if name in chain:
                raise ModuleError(f"dependency cycle: {' → '.join((*chain, name))}")
            if name not in self._specs:
                raise ModuleError(f"unknown module {name!r}")
            if name in wanted:
                return
            wanted.add(name)
            for dep in self._specs[name].depends_on:
                add(dep, (*chain, name))

        for target in targets:
            add(target, ())

        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            visiting.add(name)
            spec = self._specs[name]
            for dep in (*spec.depends_on, *spec.uses):
                # Frontends come last whoever depends on them (see ModuleSpec).
                if dep in wanted and dep not in visiting and not self._specs[dep].frontend:
                    visit(dep)
            visiting.discard(name)
            order.append(name)

        for name in sorted(wanted, key=lambda n: (self._specs[n].frontend, n)):
            if not self._specs[name].frontend:
                visit(name)
        order.extend(n for n in sorted(wanted) if self._specs[n].frontend and n not in order)
        return order

    async def start(self, targets: Iterable[str], runtime: Runtime) -> None:
        """Start the plan; on a failure stop what started and raise ModuleError."""
        self._order = self.plan(targets)
        for name in self._order:
            entry = _Running(self._specs[name])
            self._running[name] = entry
        for name in self._order:
            entry = self._running[name]
            entry.lifecycle.move(ServiceState.STARTING)
            try:
                made = entry.spec.factory(runtime)
                service = await made if asyncio.iscoroutine(made) else made
                assert isinstance(service, Service)
                entry.service = service
                runtime.register(name, service)
                await service.start()
            except Exception as exc:
                entry.lifecycle.move(ServiceState.FAILED, exc)
                log.error("module %s failed to start: %s", name, exc)
                await self.stop(grace=0)
                raise ModuleError(f"{name}: {exc}") from exc
            entry.lifecycle.move(ServiceState.RUNNING)
            log.debug("module %s running", name)

    async def stop(self, grace: float) -> None:
        """Stop every started module in reverse order, frontends first.

        Services with a ``begin_drain()`` method are told first, all at once, so that
        one that refuses new work while draining (the edge) does so from the moment
        stopping begins, not only when its turn comes after the frontends."""
        for name in self._order:
            entry = self._running.get(name)
            begin = getattr(entry.service, "begin_drain", None) if entry is not None else None
            if callable(begin):
                try:
                    begin()
                except Exception as exc:
                    log.error("module %s: begin_drain failed: %s", name, exc)
        for name in reversed(self._order):
            entry = self._running.get(name)
            if entry is None or entry.lifecycle.state in (
                ServiceState.NEW,
                ServiceState.TERMINATED,
            ):
                if entry is not None and entry.lifecycle.state is ServiceState.NEW:
                    entry.lifecycle.move(ServiceState.TERMINATED)
                continue
            if entry.service is None:
                entry.lifecycle.move(ServiceState.TERMINATED)
                continue
            failed = entry.lifecycle.state is ServiceState.FAILED
            entry.lifecycle.move(ServiceState.STOPPING)
            try:
                await asyncio.wait_for(entry.service.stop(grace), timeout=grace + 5.0)
            except Exception as exc:
                log.error("module %s did not stop cleanly: %s", name, exc)
                entry.lifecycle.move(ServiceState.FAILED, exc)
                continue
            entry.lifecycle.move(ServiceState.FAILED if failed else ServiceState.TERMINATED)

    def states(self) -> dict[str, ServiceState]:
        return {name: self._running[name].lifecycle.state for name in self._order}

    def service_ready(self, name: str) -> bool:
        entry = self._running.get(name)
        if entry is None or entry.service is None:
            return False
        if entry.lifecycle.state is not ServiceState.RUNNING:
            return False
        try:
            return bool(entry.service.ready())
        except Exception:
            return False

    def ready(self) -> bool:
        """True when every planned module runs and says it is ready."""
        return bool(self._order) and all(self.service_ready(n) for n in self._order)
