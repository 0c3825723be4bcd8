"""``sipmesh serve``: start the planned modules, run until SIGTERM/SIGINT, drain, stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from sipmesh import __version__
from sipmesh.observe.stats import register_instance_info
from sipmesh.runtime.config import SipmeshConfig
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.modules import ModuleError, ModuleManager, ModuleSpec
from sipmesh.runtime.telemetry import configure_logging, make_tracer_provider

log = logging.getLogger("sipmesh.serve")


def _runner() -> asyncio.Runner:
    # uvloop's UDP receive + send costs ~7 µs against ~28 µs for the default loop
    # (DESIGN.md, Performance), so it is used wherever it is installed.
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=loop_factory)


def run_server(config: SipmeshConfig, modules: list[ModuleSpec] | None = None) -> int:
    """Run until a signal; return the process exit status."""
    service_name = "+".join(config.targets()) if "all" not in config.target else "all"
    configure_logging(config.telemetry, service=service_name, instance=config.instance_id)
    with _runner() as runner:
        return runner.run(_serve(config, modules))


def tune_gc(threshold: int) -> None:
    """Garbage collection for a long-running server.

    Under sipp load the collector took ~10 % of the embedded server's CPU (py-spy
    --native, REGISTER with digest auth): every full collection walks the hundreds of
    thousands of objects built at start-up (modules, protobuf descriptors, the
    configuration) although none of them will ever be garbage. ``gc.freeze()`` moves
    them out of the collector's sight; a higher young-generation threshold lets the
    short-lived objects of a transaction die before the collector runs, so fewer of
    them are promoted and walked again by the older generations.
    """
    gc.collect()
    gc.freeze()
    if threshold:
        _, second, third = gc.get_threshold()
        gc.set_threshold(threshold, second, third)


async def _serve(config: SipmeshConfig, modules: list[ModuleSpec] | None) -> int:
    if modules is None:
        from sipmesh.runtime.registry import default_modules

        modules = default_modules()
    manager = ModuleManager(modules)
    service_name = ",".join(config.target)
    provider = make_tracer_provider(
        config.telemetry, service=service_name, instance=config.instance_id
    )
    runtime = Runtime(config, manager, tracer=provider.get_tracer("sipmesh"))
    register_instance_info(
        runtime.metrics,
        instance_id=config.instance_id,
        service=service_name,
        targets=config.targets(),
        version=__version__,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await manager.start(config.targets(), runtime)
    except ModuleError as exc:
        print(f"sipmesh: cannot start: {exc}", file=sys.stderr)
        await runtime.close()
        provider.shutdown()
        return 1
    tune_gc(config.gc_threshold)
    log.info(
        "sipmesh running: targets=%s instance=%s", ",".join(config.targets()), config.instance_id
    )
    await stop.wait()
    log.info("stopping (grace %.1fs)", config.grace_period)
    await manager.stop(config.grace_period)
    await runtime.close()
    provider.shutdown()
    return 0
