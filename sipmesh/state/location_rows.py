"""Binding <-> row of Kamailio's ``location`` table (usrloc db_mode persistence).

Column mapping (Kamailio usrloc's meaning in brackets):
- username/domain: the AOR split by the caller (``domain`` None without use_domain)
- expires, last_modified: naive UTC datetimes from the epoch floats
- q: the q-value, -1.0 when the contact had none (usrloc's "unspecified")
- path: the Path values joined with "," (as usrloc stores the Path header)
- reg_id: 0 when none; instance: the +sip.instance value
- edge_id, flow_id, attrs: sipmesh's columns (schema 3); ``attrs`` is JSON holding
  transport and the binding's extra attributes
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sipmesh.state.location import Binding

INSERT_SQL = (
    "INSERT INTO location (ruid, username, domain, contact, received, path, expires, q, "
    "callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance, "
    "reg_id, edge_id, flow_id, attrs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
    "$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.timestamp()
    return float(value)


def split_path(text: str | None) -> tuple[str, ...]:
    """Split a stored Path value on commas outside <...> and quotes."""
    if not text:
        return ()
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0 and not quoted:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return tuple(p for p in parts if p)


def binding_to_row(b: Binding, *, username: str, domain: str | None) -> dict[str, Any]:
    """The location row for ``b`` (keys are the column names)."""
    extra = {"transport": b.transport, "attrs": b.attrs}
    return {
        "ruid": b.ruid,
        "username": username,
        "domain": domain,
        "contact": b.contact,
        "received": b.received,
        "path": ",".join(b.path) if b.path else None,
        "expires": _dt(b.expires_at),
        "q": -1.0 if b.q is None else float(b.q),
        "callid": b.call_id,
        "cseq": b.cseq,
        "last_modified": _dt(b.last_modified),
        "flags": b.flags,
        "cflags": b.cflags,
        "user_agent": b.user_agent,
        "socket": b.socket,
        "methods": b.methods,
        "instance": b.instance,
        "reg_id": b.reg_id or 0,
        "edge_id": b.edge_id,
        "flow_id": b.flow_id,
        "attrs": json.dumps(extra, separators=(",", ":"), sort_keys=True),
    }


def insert_args(row: dict[str, Any]) -> tuple[Any, ...]:
    """The parameters of INSERT_SQL for a row from binding_to_row."""
    return tuple(
        row[c]
        for c in (
            "ruid", "username", "domain", "contact", "received", "path", "expires", "q",
            "callid", "cseq", "last_modified", "flags", "cflags", "user_agent", "socket",
            "methods", "instance", "reg_id", "edge_id", "flow_id", "attrs",
        )
    )  # fmt: skip


def binding_from_row(row: dict[str, Any], *, aor: str) -> Binding:
    """A Binding from a location row (as fetched by Database.fetch)."""
    extra = json.loads(row.get("attrs") or "{}")
    q = row.get("q")
    return Binding(
        aor=aor,
        contact=row["contact"],
        expires_at=_epoch(row["expires"]),
        q=None if q is None or float(q) < 0 else float(q),
        call_id=row.get("callid") or "",
        cseq=int(row.get("cseq") or 0),
        path=split_path(row.get("path")),
        received=row.get("received"),
        transport=extra.get("transport") or "udp",
        socket=row.get("socket"),
        edge_id=row.get("edge_id"),
        flow_id=row.get("flow_id"),
        instance=row.get("instance"),
        reg_id=int(row["reg_id"]) if row.get("reg_id") else None,
        user_agent=row.get("user_agent") or "",
        methods=row.get("methods"),
        flags=int(row.get("flags") or 0),
        cflags=int(row.get("cflags") or 0),
        last_modified=_epoch(row["last_modified"]) if row.get("last_modified") else 0.0,
        ruid=row.get("ruid") or "",
        attrs=dict(extra.get("attrs") or {}),
    )
