"""usrloc's db_mode: the ``location`` table behind the location store.

- ``none``: the store alone (memory, or Redis with its own persistence).
- ``write-through``: every REGISTER's AOR is written before the 200 is sent.
- ``write-back``: changed AORs are remembered and written every timer_interval
  (and at stop).

Each write is a snapshot of one AOR, not a delta: inside one database transaction
(holding a per-AOR advisory lock on PostgreSQL) the writer reads the AOR's live
bindings from the store and replaces the AOR's rows with them. Any two writers of
one AOR are serialised by the lock and the later one reads a store state at least
as new as the earlier one's, so the table ends equal to the store, whichever
registrar instance wrote last (several instances share Redis and PostgreSQL).

Columns sipmesh needs that Kamailio's ``location`` lacks (transport, edge and flow
ids, flow token, contact parameters) go to ``location_attrs`` keyed by ruid, the
table Kamailio's usrloc keeps extra attributes in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sipmesh.registrar.aor import split_key
from sipmesh.state.db import Database, Executor, Row
from sipmesh.state.location import Binding, LocationStore

log = logging.getLogger("sipmesh.registrar")

#: The ``atype`` of the attribute rows sipmesh writes (string values).
ATTR_TYPE_STRING = 0
_ATTR_NAMES = ("transport", "edge_id", "flow_id", "attrs")
_AVALUE_MAX = 512
# Kamailio stores an unspecified q as -1 (Q_UNSPECIFIED).
_Q_UNSPECIFIED = -1.0

_INSERT = (
    "INSERT INTO location (ruid, username, domain, contact, received, path, expires, q, "
    "callid, cseq, last_modified, flags, cflags, user_agent, socket, methods, instance, "
    "reg_id, server_id, connection_id, keepalive, partition) VALUES ($1, $2, $3, $4, $5, "
    "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 0, 0, 0, 0)"
)
_INSERT_ATTR = (
    "INSERT INTO location_attrs (ruid, username, domain, aname, atype, avalue, "
    "last_modified) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def from_datetime(value: Any) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _where(aor: str, use_domain: bool) -> tuple[str, list[Any]]:
    user, domain = split_key(aor) if use_domain else (aor, "")
    if use_domain:
        return "username = $1 AND domain = $2", [user, domain]
    return "username = $1 AND domain IS NULL", [user]


def binding_row(b: Binding, use_domain: bool) -> list[Any]:
    user, domain = split_key(b.aor) if use_domain else (b.aor, "")
    return [
        b.ruid,
        user,
        domain if use_domain else None,
        b.contact,
        b.received,
        ",".join(b.path) or None,
        to_datetime(b.expires_at),
        _Q_UNSPECIFIED if b.q is None else b.q,
        b.call_id,
        b.cseq,
        to_datetime(b.last_modified),
        b.flags,
        b.cflags,
        b.user_agent,
        b.socket,
        b.methods,
        b.instance,
        b.reg_id or 0,
    ]


def _attr_values(b: Binding) -> dict[str, str]:
    values = {"transport": b.transport, "edge_id": b.edge_id or "", "flow_id": b.flow_id or ""}
    if b.attrs:
        values["attrs"] = json.dumps(b.attrs, separators=(",", ":"), sort_keys=True)
    return {k: v for k, v in values.items() if v and len(v) <= _AVALUE_MAX}


def _split_path(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    from sipmesh.sip.headers import split_list

    return tuple(split_list(text))


def binding_from_row(row: Row, attrs: dict[str, str], use_domain: bool) -> Binding:
    aor = f"{row['username']}@{row['domain']}" if use_domain and row["domain"] else row["username"]
    # PostgreSQL's REAL is a float4: round back to the 3 decimals of a qvalue (§20.10).
    q = round(float(row["q"]), 3)
    extra: dict[str, Any] = {}
    if "attrs" in attrs:
        try:
            loaded = json.loads(attrs["attrs"])
            extra = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            extra = {}
    return Binding(
        aor=str(aor),
        contact=str(row["contact"]),
        expires_at=from_datetime(row["expires"]),
        q=None if q < 0 else q,
        call_id=str(row["callid"]),
        cseq=int(row["cseq"]),
        path=_split_path(row["path"]),
        received=row["received"] or None,
        transport=attrs.get("transport", "udp"),
        socket=row["socket"] or None,
        edge_id=attrs.get("edge_id") or None,
        flow_id=attrs.get("flow_id") or None,
        instance=row["instance"] or None,
        reg_id=int(row["reg_id"]) or None,
        user_agent=str(row["user_agent"] or ""),
        methods=None if row["methods"] is None else int(row["methods"]),
        flags=int(row["flags"]),
        cflags=int(row["cflags"]),
        last_modified=from_datetime(row["last_modified"]),
        ruid=str(row["ruid"]),
        attrs=extra,
    )


async def write_aor(db: Executor, aor: str, bindings: Iterable[Binding], use_domain: bool) -> int:
    """Replace the rows of ``aor`` by ``bindings`` (inside the caller's transaction)."""
    where, args = _where(aor, use_domain)
    old = await db.fetch(f"SELECT ruid FROM location WHERE {where}", *args)
    ruids = [str(r["ruid"]) for r in old]
    for ruid in ruids:
        await db.execute("DELETE FROM location_attrs WHERE ruid = $1", ruid)
    await db.execute(f"DELETE FROM location WHERE {where}", *args)
    rows = [binding_row(b, use_domain) for b in bindings]
    if rows:
        await db.executemany(_INSERT, rows)
        attr_rows = []
        for b, row in zip(bindings, rows, strict=False):
            for name, value in _attr_values(b).items():
                attr_rows.append([b.ruid, row[1], row[2], name, ATTR_TYPE_STRING, value, row[10]])
        if attr_rows:
            await db.executemany(_INSERT_ATTR, attr_rows)
    return len(rows) + len(ruids)


async def read_all(db: Executor, use_domain: bool, now: float) -> dict[str, list[Binding]]:
    """Every unexpired row of the table, by AOR (usrloc's preload at start)."""
    rows = await db.fetch("SELECT * FROM location WHERE expires > $1", to_datetime(now))
    attr_rows = await db.fetch("SELECT ruid, aname, avalue FROM location_attrs")
    attrs: dict[str, dict[str, str]] = {}
    for r in attr_rows:
        attrs.setdefault(str(r["ruid"]), {})[str(r["aname"])] = str(r["avalue"])
    out: dict[str, list[Binding]] = {}
    for row in rows:
        b = binding_from_row(row, attrs.get(str(row["ruid"]), {}), use_domain)
        out.setdefault(b.aor, []).append(b)
    return out


class LocationPersistence:
    """db_mode for one registrar instance."""

    def __init__(
        self,
        db: Database,
        store: LocationStore,
        *,
        mode: str,
        use_domain: bool,
        on_write: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.mode = mode
        self._db = db
        self._store = store
        self._use_domain = use_domain
        self._dirty: set[str] = set()
        self._on_write = on_write

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    async def changed(self, aor: str) -> None:
        """An AOR changed in the store: write it now or remember it per db_mode."""
        if self.mode == "write-through":
            await self.sync(aor)
        elif self.mode == "write-back":
            self._dirty.add(aor)

    async def sync(self, aor: str) -> None:
        async with self._db.transaction() as tx:
            if tx.dialect == "postgresql":
                # Serialise writers of one AOR across instances (see module docstring).
                await tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", aor)
            bindings = await self._store.get(aor)
            self._on_write(await write_aor(tx, aor, bindings, self._use_domain))

    async def flush(self) -> int:
        """write-back: write every AOR changed since the last flush."""
        dirty, self._dirty = self._dirty, set()
        done = 0
        try:
            for aor in sorted(dirty):
                await self.sync(aor)
                done += 1
        except BaseException:
            # Not written: keep them for the next flush (nothing is lost on an outage).
            self._dirty |= set(sorted(dirty)[done:])
            raise
        return done

    async def load(self, now: float) -> int:
        """Preload the table into the store; newer store bindings win (by contact)."""
        by_aor = await read_all(self._db, self._use_domain, now)
        loaded = 0
        for aor, rows in by_aor.items():

            def merge(current: list[Binding], rows: list[Binding] = rows) -> list[Binding]:
                have = {b.contact: b for b in current}
                for b in rows:
                    mine = have.get(b.contact)
                    if mine is None or mine.last_modified < b.last_modified:
                        have[b.contact] = b
                return list(have.values())

            loaded += len(await self._store.update(aor, merge))
        return loaded
