"""Writing the records of one event, exactly once, in one database transaction.

``RecordStore.apply(event_id, plan)`` runs, in one transaction:

1. ``INSERT INTO events_processed ... ON CONFLICT DO NOTHING``: no row inserted means
   the event was already committed (a redelivery) and nothing else is written;
2. the ``acc`` and ``missed_calls`` rows;
3. the CDR: a row for the Call-ID is created when missing (``ON CONFLICT DO
   NOTHING`` on ``cdrs_call_id_idx``), locked (PostgreSQL ``FOR UPDATE``; SQLite has
   one writer at a time), merged with ``records.merge_cdr`` and written back.

So an event is either fully recorded with its idempotency key or not at all, and two
consumers handling events of one call at once serialise on its cdrs row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sipmesh.accounting.records import (
    ACC_COLUMNS,
    CDR_COLUMNS,
    AccRow,
    Cdr,
    Plan,
    close_by_timeout,
    merge_cdr,
    to_datetime,
)
from sipmesh.state.db import Database, Executor

_ACC_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(ACC_COLUMNS) + 1))
_ACC_INSERT = {
    table: f"INSERT INTO {table} ({', '.join(ACC_COLUMNS)}) VALUES ({_ACC_PLACEHOLDERS})"
    for table in ("acc", "missed_calls")
}
_CDR_SET = ", ".join(f"{c} = ${i}" for i, c in enumerate(CDR_COLUMNS[1:], start=2))
_CDR_UPDATE = f"UPDATE cdrs SET {_CDR_SET} WHERE call_id = $1"
_CDR_SELECT = f"SELECT {', '.join(CDR_COLUMNS)} FROM cdrs WHERE call_id = $1"


@dataclass(frozen=True, slots=True)
class Written:
    """What ``apply`` committed (None fields: nothing of that kind)."""

    acc: AccRow | None = None
    missed: AccRow | None = None
    cdr: Cdr | None = None
    #: The CDR as it was before this event (None: the event created the row).
    cdr_before: Cdr | None = None

    @property
    def cdr_completed(self) -> bool:
        """The event left the CDR complete (INVITE outcome and end known) and changed."""
        cdr = self.cdr
        return cdr is not None and cdr.status != 0 and not cdr.open and cdr != self.cdr_before


class RecordStore:
    """The accounting tables of one database, written by one consumer name."""

    def __init__(
        self, db: Database, *, consumer: str = "accounting", clock: Callable[[], float]
    ) -> None:
        self._db = db
        self._consumer = consumer
        self._clock = clock

    @property
    def db(self) -> Database:
        return self._db

    async def apply(self, event_id: str, plan: Plan) -> Written | None:
        """Record the event; None when it was recorded before (nothing written now)."""
        async with self._db.transaction() as tx:
            fresh = await tx.execute(
                "INSERT INTO events_processed (consumer, event_id, processed_at) "
                "VALUES ($1, $2, $3) ON CONFLICT (consumer, event_id) DO NOTHING",
                self._consumer,
                event_id,
                to_datetime(self._clock()),
            )
            if not fresh:
                return None
            if plan.acc is not None:
                await tx.execute(_ACC_INSERT["acc"], *plan.acc.params())
            if plan.missed is not None:
                await tx.execute(_ACC_INSERT["missed_calls"], *plan.missed.params())
            cdr = current = None
            if plan.cdr is not None:
                current = await self._lock_cdr(tx, plan.cdr.call_id, plan.cdr.seen_at)
                cdr = merge_cdr(current, plan.cdr)
                await tx.execute(_CDR_UPDATE, *cdr.params())
        return Written(plan.acc, plan.missed, cdr, current)

    async def _lock_cdr(self, tx: Executor, call_id: str, seen_at: float) -> Cdr | None:
        """The call's row, locked for this transaction; None when this created it."""
        created = await tx.execute(
            "INSERT INTO cdrs (call_id, start_time) VALUES ($1, $2) "
            "ON CONFLICT (call_id) DO NOTHING",
            call_id[:255],
            to_datetime(seen_at),
        )
        lock = " FOR UPDATE" if tx.dialect == "postgresql" else ""
        row = await tx.fetchrow(_CDR_SELECT + lock, call_id[:255])
        if created or row is None:
            return None
        return Cdr.from_row(row)

    async def close_timed_out(self, dialog_timeout: float, *, limit: int = 500) -> list[Cdr]:
        """Close calls with no end whose last state change is older than the timeout.

        Each row is closed in its own short transaction and only if still open, so
        sweepers of several instances never close a call twice.
        """
        cutoff = to_datetime(self._clock() - dialog_timeout)
        rows = await self._db.fetch(
            "SELECT call_id FROM cdrs WHERE end_time IS NULL "
            "AND COALESCE(answer_time, start_time) < $1 ORDER BY start_time LIMIT $2",
            cutoff,
            limit,
        )
        closed: list[Cdr] = []
        lock = " FOR UPDATE" if self._db.dialect == "postgresql" else ""
        for row in rows:
            async with self._db.transaction() as tx:
                current = await tx.fetchrow(_CDR_SELECT + lock, row["call_id"])
                if current is None or current["end_time"] is not None:
                    continue  # ended meanwhile (a BYE, or another sweeper)
                cdr = close_by_timeout(Cdr.from_row(current), dialog_timeout)
                await tx.execute(_CDR_UPDATE, *cdr.params())
            closed.append(cdr)
        return closed

    async def prune_processed(self, older_than: float) -> int:
        """Forget idempotency keys older than ``older_than`` seconds."""
        return await self._db.execute(
            "DELETE FROM events_processed WHERE consumer = $1 AND processed_at < $2",
            self._consumer,
            to_datetime(self._clock() - older_than),
        )
