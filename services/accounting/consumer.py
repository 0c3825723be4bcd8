"""The durable consumer: events from JetStream to the accounting tables.

Guarantees (docs/accounting.md):

- Nothing is acknowledged before it is committed: the bus acks a message when the
  handler returns, and the handler returns only after the database transaction of
  ``RecordStore.apply`` committed (or found the event already committed).
- Exactly-once records: the event's idempotency key goes to ``events_processed`` in
  the same transaction as its rows, so a redelivery (lost ack, crash between commit
  and ack, ack_wait expiry) writes nothing twice.
- Shared work: every instance (and every worker of an instance) pulls from the same
  durable consumer; JetStream hands each message to one of them at a time.
- Database down: the handler pauses with exponential backoff and raises, so the bus
  naks the message; events wait in the stream and are written when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Gauge

from sipmesh.accounting.records import event_key, plan
from sipmesh.accounting.sinks import Sink
from sipmesh.accounting.store import RecordStore, Written
from sipmesh.gen.sipmesh.v1 import events_pb2
from sipmesh.runtime.sections.accounting import ACCOUNTING_SUBJECTS
from sipmesh.state.bus import EventBus, Message, Subscription
from sipmesh.state.errors import ConstraintViolation, StateUnavailable

log = logging.getLogger(__name__)

#: What accounting consumes (events.proto header), without the bus prefix; shared
#: with the edge, which ensures the stream at its start.
SUBJECTS: tuple[str, ...] = ACCOUNTING_SUBJECTS


class AccountingMetrics:
    """Counters on the runtime's registry (Kamailio's acc has no statistics of its own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "sipmesh_acc_events",
            "Accounting events handled, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.records = Counter(
            "sipmesh_acc_records",
            "Records written, by table (acc, missed_calls, cdrs)",
            ["table"],
            registry=registry,
        )
        self.db_errors = Counter(
            "sipmesh_acc_db_errors",
            "Events the database could not take (retried later)",
            registry=registry,
        )
        self.timeouts = Counter(
            "sipmesh_acc_cdrs_timed_out",
            "Calls closed by the dialog timeout (no BYE seen)",
            registry=registry,
        )
        self.db_down = Gauge(
            "sipmesh_acc_db_down",
            "1 while the last write attempt failed for want of the database",
            registry=registry,
        )


class AccountingConsumer:
    """Consumes the transaction and dialog events durably into a ``RecordStore``."""

    def __init__(
        self,
        bus: EventBus,
        store: RecordStore,
        metrics: AccountingMetrics,
        *,
        stream: str = "events",
        durable: str = "accounting",
        workers: int = 1,
        batch: int = 64,
        ack_wait: float = 30.0,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        sinks: Sequence[Sink] = (),
        after_commit: Callable[[Message, Written], Awaitable[None]] | None = None,
    ) -> None:
        self._bus = bus
        self._store = store
        self._metrics = metrics
        self._stream = stream
        self._durable = durable
        self._workers = workers
        self._batch = batch
        self._ack_wait = ack_wait
        self._retry_initial = retry_initial
        self._retry_max = min(retry_max, ack_wait / 2)
        self._sinks = list(sinks)
        # Called after each commit, before the ack: fault injection for the tests of
        # the commit/ack window, and a hook for observers.
        self._after_commit = after_commit
        self._delay = retry_initial
        self._subs: list[Subscription] = []
        #: False while the database refuses writes (for /ready).
        self.db_ok = True

    @property
    def running(self) -> bool:
        return bool(self._subs)

    async def start(self) -> None:
        for _ in range(self._workers):
            self._subs.append(
                await self._bus.consume(
                    self._stream,
                    self._durable,
                    SUBJECTS,
                    self.handle,
                    ack_wait=self._ack_wait,
                    batch=self._batch,
                )
            )

    async def stop(self) -> None:
        """Stop pulling; an event being handled is not acked and comes again."""
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                # Bounded: a stop stuck on a dead connection must not hang shutdown;
                # whatever was not acked is delivered again anyway.
                async with asyncio.timeout(10.0):
                    await sub.stop()
            except TimeoutError:
                log.warning("accounting: a consumer did not stop within 10 s")

    async def handle(self, message: Message) -> None:
        """Record one event; return only once committed (the bus then acks it)."""
        try:
            envelope = events_pb2.Envelope.FromString(message.data)
        except DecodeError:
            # It can never be recorded; acking it keeps it from blocking the stream.
            log.warning("accounting: undecodable event on %s dropped", message.subject)
            self._metrics.events.labels("invalid").inc()
            return
        work = plan(envelope)
        if work.empty:
            self._metrics.events.labels("ignored").inc()
            return
        key = event_key(envelope, f"{message.subject}#{message.stream_seq}")
        try:
            written = await self._store.apply(key, work)
        except StateUnavailable as exc:
            await self._back_off(exc)
            raise
        except ConstraintViolation:
            # Not expected (every insert is ON CONFLICT-safe); retried like an outage.
            self._metrics.events.labels("conflict").inc()
            raise
        self._recovered()
        if written is None:
            self._metrics.events.labels("duplicate").inc()
            return
        self._metrics.events.labels("recorded").inc()
        self._emit(written)
        if self._after_commit is not None:
            await self._after_commit(message, written)

    async def _back_off(self, exc: Exception) -> None:
        if self.db_ok:
            log.warning("accounting: database unavailable, events wait in the stream: %s", exc)
        self.db_ok = False
        self._metrics.db_down.set(1)
        self._metrics.db_errors.inc()
        self._metrics.events.labels("retried").inc()
        delay, self._delay = self._delay, min(self._delay * 2, self._retry_max)
        await asyncio.sleep(delay)

    def _recovered(self) -> None:
        if not self.db_ok:
            log.info("accounting: database reachable again")
        self.db_ok = True
        self._metrics.db_down.set(0)
        self._delay = self._retry_initial

    def _emit(self, written: Written) -> None:
        out: list[tuple[str, dict[str, object]]] = []
        if written.acc is not None:
            out.append(("acc", written.acc.as_dict()))
        if written.missed is not None:
            out.append(("missed_calls", written.missed.as_dict()))
        if written.cdr is not None:
            self._metrics.records.labels("cdrs").inc(1 if written.cdr_before is None else 0)
            if written.cdr_completed:
                out.append(("cdr", written.cdr.as_dict()))
        for kind, record in out:
            if kind != "cdr":
                self._metrics.records.labels(kind).inc()
            for sink in self._sinks:
                try:
                    sink.write(kind, record)
                except Exception as exc:  # a sink never blocks the database path
                    log.debug("accounting sink failed: %s", exc)
