"""The accounting service: the durable consumer, the dialog timeout sweep, the sinks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from sipmesh.accounting.consumer import AccountingConsumer, AccountingMetrics
from sipmesh.accounting.sinks import Sink, open_sinks
from sipmesh.accounting.store import RecordStore
from sipmesh.accounting.timeouts import DialogTimeoutSweeper
from sipmesh.runtime.sections.accounting import AccountingConfig
from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database


class AccountingService:
    """``sipmesh serve --target accounting``: acc, missed_calls and cdrs from the bus."""

    def __init__(
        self,
        config: AccountingConfig,
        *,
        db: Database,
        bus: EventBus,
        metrics: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        sinks: Sequence[Sink] | None = None,
    ) -> None:
        self.config = config
        self._db = db
        self._bus = bus
        self.metrics = AccountingMetrics(metrics)
        self.sinks = (
            list(sinks)
            if sinks is not None
            else open_sinks(config.jsonl_path, config.syslog_address, config.syslog_facility)
        )
        self.store = RecordStore(db, consumer=config.durable, clock=clock)
        self.consumer = AccountingConsumer(
            bus,
            self.store,
            self.metrics,
            stream=config.stream,
            durable=config.durable,
            workers=config.workers if db.dialect == "postgresql" else 1,
            batch=config.fetch_batch,
            ack_wait=config.ack_wait,
            retry_initial=config.retry_initial,
            retry_max=config.retry_max,
            sinks=self.sinks,
        )
        self.sweeper = DialogTimeoutSweeper(
            self.store,
            self.metrics,
            dialog_timeout=config.dialog_timeout,
            interval=config.sweep_interval,
            processed_retention=config.processed_retention,
            sinks=self.sinks,
        )
        self._running = False

    async def start(self) -> None:
        await self.consumer.start()
        self.sweeper.start()
        self._running = True

    async def stop(self, grace: float) -> None:
        self._running = False
        await self.sweeper.stop()
        # Events in hand are not acknowledged: JetStream delivers them again.
        await self.consumer.stop()
        for sink in self.sinks:
            sink.close()

    def ready(self) -> bool:
        return self._running and self.consumer.db_ok and self._bus.healthy and self._db.healthy
