"""Reading the accounting tables: filters, and CSV / JSON export.

What the admin API and ``sipmesh ctl acc|cdr`` call. Filters (all optional, ANDed):
a time range (acc/missed_calls ``time``, cdrs ``start_time``; ``since`` inclusive,
``until`` exclusive), a user (``alice`` or ``alice@example.com``: acc's src/dst users,
cdrs' caller/callee), a Call-ID, and a status: an exact SIP code (``486``) or a class
(``4xx``); for CDRs also how the call ended (``end_reason``: bye, busy, cancel ...).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sipmesh.accounting.records import ACC_COLUMNS, CDR_COLUMNS
from sipmesh.state.db import Executor, Row

AccTable = Literal["acc", "missed_calls"]
MAX_LIMIT = 100_000


class QueryError(ValueError):
    """A filter that cannot be applied (bad time, status or limit): a 400 / usage error."""


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    user: str = ""
    call_id: str = ""
    status: str = ""
    end_reason: str = ""
    limit: int = 1000
    offset: int = 0


def parse_time(text: str) -> datetime:
    """Epoch seconds or ISO 8601 (a time without zone is UTC) -> naive UTC datetime."""
    value = text.strip()
    try:
        return datetime.fromtimestamp(float(value), tz=UTC).replace(tzinfo=None)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"not a time (ISO 8601 or epoch seconds): {text!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def make_filters(
    *,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    user: str = "",
    call_id: str = "",
    status: str = "",
    end_reason: str = "",
    limit: int = 1000,
    offset: int = 0,
) -> Filters:
    """Validated filters from loose input (strings from a CLI or a query string)."""
    start = parse_time(since) if isinstance(since, str) and since else since or None
    end = parse_time(until) if isinstance(until, str) and until else until or None
    status = status.strip().lower()
    if status and not re.fullmatch(r"[1-6](\d\d|xx)", status):
        raise QueryError(f"status must be a SIP code (486) or a class (4xx): {status!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be 1..{MAX_LIMIT}")
    if offset < 0:
        raise QueryError("offset must be >= 0")
    return Filters(
        start if isinstance(start, datetime) else None,
        end if isinstance(end, datetime) else None,
        user.strip(),
        call_id.strip(),
        status,
        end_reason.strip().lower(),
        limit,
        offset,
    )


class _Where:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, sql: str, *values: Any) -> None:
        # Each "?" becomes the next numbered placeholder ($n, the Database convention).
        for value in values:
            self.args.append(value)
            sql = sql.replace("?", f"${len(self.args)}", 1)
        self.parts.append(sql)

    def sql(self) -> str:
        return (" WHERE " + " AND ".join(self.parts)) if self.parts else ""


def _status(where: _Where, column: str, status: str, as_text: bool) -> None:
    if not status:
        return
    if status.endswith("xx"):
        low = int(status[0]) * 100
        if as_text:
            where.add(f"{column} LIKE ?", f"{status[0]}__")
        else:
            where.add(f"{column} >= ? AND {column} < ?", low, low + 100)
    else:
        where.add(f"{column} = ?", status if as_text else int(status))


async def query_acc(
    db: Executor, table: AccTable = "acc", filters: Filters | None = None
) -> list[Row]:
    """Rows of ``acc`` or ``missed_calls``, oldest first."""
    if table not in ("acc", "missed_calls"):
        raise QueryError(f"no such accounting table: {table!r}")
    f = filters or Filters()
    where = _Where()
    if f.since is not None:
        where.add("time >= ?", f.since)
    if f.until is not None:
        where.add("time < ?", f.until)
    if f.call_id:
        where.add("callid = ?", f.call_id)
    if f.user:
        user, _, domain = f.user.partition("@")
        if domain:
            where.add(
                "((src_user = ? AND src_domain = ?) OR ((dst_user = ? OR dst_ouser = ?) "
                "AND dst_domain = ?))",
                user, domain, user, user, domain,
            )  # fmt: skip
        else:
            where.add("(src_user = ? OR dst_user = ? OR dst_ouser = ?)", user, user, user)
    _status(where, "sip_code", f.status, as_text=True)
    cols = ", ".join(("id", *ACC_COLUMNS))
    sql = f"SELECT {cols} FROM {table}{where.sql()} ORDER BY time, id"
    return await db.fetch(sql + f" LIMIT {f.limit} OFFSET {f.offset}", *where.args)


async def query_cdrs(db: Executor, filters: Filters | None = None) -> list[Row]:
    """CDRs, oldest call first."""
    f = filters or Filters()
    where = _Where()
    if f.since is not None:
        where.add("start_time >= ?", f.since)
    if f.until is not None:
        where.add("start_time < ?", f.until)
    if f.call_id:
        where.add("call_id = ?", f.call_id)
    if f.user:
        if "@" in f.user:
            where.add("(caller = ? OR callee = ?)", f.user, f.user)
        else:
            pattern = f.user.replace("%", r"\%").replace("_", r"\_") + "@%"
            where.add(r"(caller LIKE ? ESCAPE '\' OR callee LIKE ? ESCAPE '\')", pattern, pattern)
    _status(where, "status", f.status, as_text=False)
    if f.end_reason:
        where.add("end_reason = ?", f.end_reason)
    cols = ", ".join(("id", *CDR_COLUMNS))
    sql = f"SELECT {cols} FROM cdrs{where.sql()} ORDER BY start_time, id"
    return await db.fetch(sql + f" LIMIT {f.limit} OFFSET {f.offset}", *where.args)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value


def to_json(rows: list[Row]) -> str:
    """A JSON array of objects; timestamps as ``YYYY-MM-DD HH:MM:SS[.ffffff]`` UTC."""
    return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2)


def to_csv(rows: list[Row], columns: tuple[str, ...] | None = None) -> str:
    """CSV with a header line (the columns of the rows, or ``columns``)."""
    out = io.StringIO()
    names = list(columns or (rows[0].keys() if rows else ()))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(n) is None else _plain(row.get(n)) for n in names])
    return out.getvalue()


def acc_columns() -> tuple[str, ...]:
    return ("id", *ACC_COLUMNS)


def cdr_columns() -> tuple[str, ...]:
    return ("id", *CDR_COLUMNS)
