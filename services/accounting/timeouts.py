"""The dialog timeout: calls answered but never ended are closed and marked.

Kamailio's dialog module ends a dialog that sees no BYE within its timeout
(default_timeout) so the CDR is not left open forever; sipmesh does the same on the
cdrs table: a call whose last state change (answer, or start if never answered) is
older than ``accounting.dialog_timeout`` gets ``end_time = that change + timeout``
and ``end_reason = 'timeout'``. A BYE recorded later (e.g. events that waited in the
stream during an outage) replaces the timeout end (records.merge_cdr).

The same loop forgets idempotency keys older than ``processed_retention``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from sipmesh.accounting.consumer import AccountingMetrics
from sipmesh.accounting.records import Cdr
from sipmesh.accounting.sinks import Sink
from sipmesh.accounting.store import RecordStore
from sipmesh.state.errors import StateError

log = logging.getLogger(__name__)


class DialogTimeoutSweeper:
    def __init__(
        self,
        store: RecordStore,
        metrics: AccountingMetrics,
        *,
        dialog_timeout: float,
        interval: float,
        processed_retention: float,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._timeout = dialog_timeout
        self._interval = interval
        self._retention = processed_retention
        self._sinks = list(sinks)
        self._task: asyncio.Task[None] | None = None

    async def sweep_once(self) -> list[Cdr]:
        """Close every timed-out call now; returns the CDRs closed by this sweeper."""
        closed: list[Cdr] = []
        while True:
            batch = await self._store.close_timed_out(self._timeout)
            closed.extend(batch)
            if len(batch) < 500:
                break
        for cdr in closed:
            self._metrics.timeouts.inc()
            for sink in self._sinks:
                with contextlib.suppress(Exception):
                    sink.write("cdr", cdr.as_dict())
        await self._store.prune_processed(self._retention)
        return closed

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep_once()
            except StateError as exc:
                log.debug("dialog timeout sweep postponed: %s", exc)
