"""Accounting queries: ``acc`` / ``missed_calls`` (Kamailio's acc module) and ``cdrs``.

Read-only, filtered in SQL, paged by offset tokens; the accounting service writes
these tables from the event stream.
"""

from __future__ import annotations

import datetime as dt
import math

from sipmesh.admin import validate as v
from sipmesh.admin.base import AdminBase
from sipmesh.clients.errors import InvalidArgument
from sipmesh.gen.sipmesh.v1 import admin_pb2

_EPOCH = dt.datetime(1970, 1, 1)
_FAR = dt.datetime(9999, 1, 1)


def _to_dt(seconds: float, name: str, default: dt.datetime) -> dt.datetime:
    if not seconds:
        return default
    if not math.isfinite(seconds) or not 0 <= seconds < 253402214400:
        raise InvalidArgument(f"{name}: not a Unix time")
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)


def _seconds(value: object) -> float:
    if isinstance(value, dt.datetime):
        return (value - _EPOCH).total_seconds()
    if isinstance(value, str) and value:
        try:
            return (dt.datetime.fromisoformat(value) - _EPOCH).total_seconds()
        except ValueError:
            return 0.0
    return 0.0


def cdr_status(code: int, answered: bool) -> str:
    if answered or 200 <= code < 300:
        return "answered"
    if code in (486, 600):
        return "busy"
    if code == 487:
        return "cancelled"
    if code in (408, 480):
        return "no-answer"
    return "failed" if code else "unknown"


class RecordOps(AdminBase):
    async def acc_query(
        self, request: admin_pb2.AccQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.AccRecords:
        table = "missed_calls" if request.table == admin_pb2.ACC_TABLE_MISSED_CALLS else "acc"
        offset, limit = v.page(request.page_token, request.limit)
        since = _to_dt(request.since, "since", _EPOCH)
        until = _to_dt(request.until, "until", _FAR)
        v.text(request.user, "user", 64)
        v.text(request.call_id, "call_id", 255)
        v.number(request.sip_code, "sip_code", (0, 699))
        rows = await self.db.fetch(
            f"SELECT * FROM {table} WHERE time >= $1 AND time <= $2 "
            "AND ($3 = '' OR src_user = $3 OR dst_user = $3) AND ($4 = '' OR callid = $4) "
            "AND ($5 = '' OR sip_code = $5) ORDER BY time DESC, id DESC LIMIT $6 OFFSET $7",
            since,
            until,
            request.user,
            request.call_id,
            str(request.sip_code) if request.sip_code else "",
            limit + 1,
            offset,
        )
        return admin_pb2.AccRecords(
            records=[
                admin_pb2.AccRecord(
                    id=int(r["id"]),
                    method=r["method"],
                    from_tag=r["from_tag"],
                    to_tag=r["to_tag"],
                    callid=r["callid"],
                    sip_code=r["sip_code"],
                    sip_reason=r["sip_reason"],
                    time=_seconds(r["time"]),
                    src_user=r["src_user"],
                    src_domain=r["src_domain"],
                    src_ip=r["src_ip"],
                    dst_ouser=r["dst_ouser"],
                    dst_user=r["dst_user"],
                    dst_domain=r["dst_domain"],
                )
                for r in rows[:limit]
            ],
            next_page_token=str(offset + limit) if len(rows) > limit else "",
        )

    async def cdr_query(
        self, request: admin_pb2.CdrQueryRequest, *, timeout: float | None = None
    ) -> admin_pb2.CdrRecords:
        offset, limit = v.page(request.page_token, request.limit)
        since = _to_dt(request.since, "since", _EPOCH)
        until = _to_dt(request.until, "until", _FAR)
        v.text(request.user, "user", 255)
        v.text(request.call_id, "call_id", 255)
        v.text(request.status, "status", 32)
        rows = await self.db.fetch(
            "SELECT * FROM cdrs WHERE start_time >= $1 AND start_time <= $2 "
            "AND ($3 = '' OR caller LIKE '%' || $3 || '%' OR callee LIKE '%' || $3 || '%') "
            "AND ($4 = '' OR call_id = $4) ORDER BY start_time DESC, id DESC",
            since,
            until,
            request.user,
            request.call_id,
        )
        records = []
        for r in rows:
            answered = r["answer_time"] is not None
            status = cdr_status(int(r["status"]), answered)
            if request.status and status != request.status:
                continue
            records.append(
                admin_pb2.CdrRecord(
                    id=int(r["id"]),
                    call_id=r["call_id"],
                    caller=r["caller"],
                    callee=r["callee"],
                    start_time=_seconds(r["start_time"]),
                    answer_time=_seconds(r["answer_time"]),
                    end_time=_seconds(r["end_time"]),
                    duration=float(r["duration"]),
                    sip_code=int(r["status"]),
                    status=status,
                    src_ip=r["src_ip"],
                    end_reason=r["end_reason"],
                )
            )
        page = records[offset : offset + limit]
        more = len(records) > offset + limit
        return admin_pb2.CdrRecords(
            records=page, next_page_token=str(offset + limit) if more else ""
        )
