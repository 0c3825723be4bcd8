"""An in-process sipmesh (registrar, router, admin) for admin tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipmesh.admin.module import AdminModule
from sipmesh.runtime.config import SipmeshConfig, load_config
from sipmesh.runtime.context import Runtime
from sipmesh.runtime.modules import ModuleManager
from sipmesh.runtime.registry import default_modules
from tests.e2e.procs import free_port

WRITE = "write-token-for-tests"
READ = "read-token-for-tests"
DOMAIN = "sipmesh.test"


@dataclass
class Embedded:
    runtime: Runtime
    admin: AdminModule
    config: SipmeshConfig

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin.port}"

    @property
    def grpc(self) -> str:
        return self.config.grpc


def make_config(tmp: Path, **extra: Any) -> SipmeshConfig:
    overrides: dict[str, Any] = {
        "target": ["registrar,router,admin"],
        "db": f"sqlite:///{tmp / 'admin.sqlite'}",
        "http": f"127.0.0.1:{free_port()}",
        "grpc": f"127.0.0.1:{free_port()}",
        "admin": "127.0.0.1:0",
        "domains": [DOMAIN],
        "instance_id": "embedded-1",
        "admin_api": {"write_token": WRITE, "read_token": READ, "fanout_timeout": 1.0},
    }
    overrides.update(extra)
    return load_config(env={}, overrides=overrides)


@contextlib.asynccontextmanager
async def embedded(tmp: Path, **extra: Any) -> AsyncIterator[Embedded]:
    config = make_config(tmp, **extra)
    manager = ModuleManager(default_modules())
    runtime = Runtime(config, manager)
    await manager.start(config.targets(), runtime)
    try:
        yield Embedded(runtime, runtime.get("admin", AdminModule), config)
    finally:
        await manager.stop(0.5)
        await runtime.close()


def http(
    method: str, url: str, body: object | None = None, token: str | None = WRITE
) -> tuple[int, Any]:
    """A blocking HTTP call (run it in a thread from async tests)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


async def ahttp(
    method: str, url: str, body: object | None = None, token: str | None = WRITE
) -> tuple[int, Any]:
    return await asyncio.to_thread(http, method, url, body, token)


@contextlib.contextmanager
def threaded(tmp: Path, **extra: Any) -> Iterator[Embedded]:
    """The in-process sipmesh on its own event loop in a thread, for blocking callers
    (the CLI's asyncio.run, schemathesis, a browser)."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    holder: list[Embedded] = []
    failure: list[BaseException] = []
    loop = asyncio.new_event_loop()

    async def main() -> None:
        try:
            async with embedded(tmp, **extra) as running:
                holder.append(running)
                stop.append(asyncio.Event())
                ready.set()
                await stop[0].wait()
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(30) or failure:
        raise RuntimeError(f"sipmesh did not start: {failure}")
    try:
        yield holder[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
        loop.close()
