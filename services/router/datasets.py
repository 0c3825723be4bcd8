"""Loading the dispatcher, lcr and dialplan tables into the router, atomically.

``reload(what)`` reads every table ``what`` names ("dispatcher", "lcr", "dialplan"
or "all") into new in-memory snapshots first; only when all of them loaded are
they swapped in, with no await between the swaps, so a routing decision sees the
old tables or the new ones, never a mix, and a failed load (database down, a bad
regular expression) leaves the running tables untouched and raises.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sipmesh.router.dialplan import Dialplan, load_dialplan
from sipmesh.router.dispatcher import DispatcherTables, load_dispatcher
from sipmesh.router.dsprobe import Prober
from sipmesh.router.env import RouterEnv
from sipmesh.router.lcr import LcrTables, load_lcr
from sipmesh.state.db import Executor

log = logging.getLogger("sipmesh.router")

KINDS = ("dispatcher", "lcr", "dialplan")


@dataclass
class Loaders:
    dispatcher: Callable[[], Awaitable[DispatcherTables]]
    lcr: Callable[[], Awaitable[LcrTables]]
    dialplan: Callable[[], Awaitable[Dialplan]]

    @classmethod
    def from_db(cls, db: Executor) -> Loaders:
        return cls(lambda: load_dispatcher(db), lambda: load_lcr(db), lambda: load_dialplan(db))


def kinds_of(what: str) -> tuple[str, ...]:
    """The tables a reload of ``what`` covers ("script" covers none of them)."""
    if what == "all":
        return KINDS
    return (what,) if what in KINDS else ()


class RoutingDatasets:
    """The three tables of one router instance, plus the dispatcher's prober."""

    def __init__(self, env: RouterEnv, loaders: Loaders, prober: Prober | None = None) -> None:
        self._env = env
        self._loaders = loaders
        self.prober = prober

    async def start(self) -> None:
        await self.reload("all")
        await self._env.dispatcher.start()
        if self.prober is not None:
            await self.prober.start()

    async def stop(self) -> None:
        if self.prober is not None:
            await self.prober.stop()
        await self._env.dispatcher.stop()

    async def reload(self, what: str = "all") -> tuple[str, ...]:
        """Load and swap the tables of ``what``; returns the kinds reloaded."""
        kinds = kinds_of(what)
        loaded: dict[str, Any] = {}
        for kind in kinds:
            loaded[kind] = await getattr(self._loaders, kind)()
        env = self._env
        if "dispatcher" in loaded:
            env.dispatcher.set_tables(loaded["dispatcher"])
        if "lcr" in loaded:
            env.lcr = loaded["lcr"]
        if "dialplan" in loaded:
            env.dialplan = loaded["dialplan"]
        if "dispatcher" in loaded:
            try:
                await env.dispatcher.refresh_states()
            except Exception as exc:  # states come with the next refresh
                log.debug("dispatcher: states not refreshed after reload: %s", exc)
        if kinds:
            log.info("router: reloaded %s", ", ".join(kinds))
        return kinds
