"""Every module sipmesh can run, with its dependencies.

Targets are the services an operator names with ``--target``; internal modules are
what they stand on. Target implementations are imported only when planned, so a
process running only the edge never imports the router's code.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable

from sipmesh.regions.module import RegionsModule
from sipmesh.runtime.backends import BusModule, DbModule, KvModule, LocationModule
from sipmesh.runtime.cluster import ClusterModule
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.grpc_server import GrpcServerService
from sipmesh.runtime.http import HttpService
from sipmesh.runtime.lifecycle import Service
from sipmesh.runtime.modules import Factory, ModuleSpec

# target -> (python package, hard dependencies, soft dependencies)
_TARGETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "registrar": (
        "sipmesh.registrar",
        ("kv", "location", "db", "bus", "regions", "grpc-server"),
        (),
    ),
    "media-relay": ("sipmesh.media_relay", ("kv", "bus", "grpc-server"), ()),
    "presence": ("sipmesh.presence", ("kv", "db", "bus", "grpc-server"), ("registrar",)),
    "router": (
        "sipmesh.router",
        ("kv", "db", "bus", "regions", "grpc-server"),
        ("registrar", "presence", "media-relay"),
    ),
    "edge": ("sipmesh.edge", ("kv", "bus", "grpc-server"), ("router", "registrar", "presence")),
    "accounting": ("sipmesh.accounting", ("db", "bus"), ()),
    "admin": (
        "sipmesh.admin",
        ("kv", "location", "db", "bus", "grpc-server"),
        ("edge", "router", "registrar", "presence", "accounting", "media-relay"),
    ),
}


def _target_factory(package: str, target: str) -> Factory:
    def create(runtime: Runtime) -> Service | Awaitable[Service]:
        try:
            module = importlib.import_module(f"{package}.module")
        except ModuleNotFoundError as exc:
            if exc.name in (package, f"{package}.module"):
                raise RuntimeError(f"target {target!r} is not part of this build") from None
            raise
        made: Service | Awaitable[Service] = module.create(runtime)
        return made

    return create


def default_modules() -> list[ModuleSpec]:
    specs = [
        ModuleSpec("http", HttpService, internal=True),
        ModuleSpec("kv", KvModule, internal=True),
        ModuleSpec("location", LocationModule, internal=True),
        ModuleSpec("db", DbModule, internal=True),
        ModuleSpec("bus", BusModule, internal=True),
        # Answers the admin service's cluster-wide questions (stats, info, log level).
        ModuleSpec("cluster", ClusterModule, depends_on=("kv", "bus"), internal=True),
        # Multi-region: the remote location index and the registration replicator.
        ModuleSpec("regions", RegionsModule, depends_on=("kv", "bus"), internal=True),
        # Frontend: started after every servicer is registered, stopped first.
        ModuleSpec("grpc-server", GrpcServerService, internal=True, frontend=True),
    ]
    for target, (package, depends, uses) in _TARGETS.items():
        specs.append(
            ModuleSpec(
                target,
                _target_factory(package, target),
                depends_on=("http", "cluster", *depends),
                uses=uses,
            )
        )
    return specs
