"""Presence state in Kamailio's tables, plus subscription ownership in the KV store.

Tables (sipmesh.state schema, Kamailio's columns): ``presentity`` (one row per
publication), ``active_watchers`` (one row per subscription dialog), ``watchers``
(authorisation decisions per watcher), ``silo`` (offline messages, msilo.py).

Several presence instances share the tables. A subscription is *owned* by one
instance, recorded in the KV store under ``presence:owner:<key>`` together with the
flow its NOTIFYs use (the table has no column for them); only the owner sends its
NOTIFYs, so a state change announced on the bus is notified exactly once. Each
instance keeps its owned subscriptions in memory (the cache); the table is written
on every change so another instance can take a subscription over (a refresh that
reaches it, or the owner gone: its ``presence:alive:<instance>`` key expired).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sipmesh.presence.model import Flow, Publication, Subscription
from sipmesh.sip import split_list
from sipmesh.state.db import Database, Row
from sipmesh.state.kv import KVStore

_OWNER = "presence:owner:"
_ALIVE = "presence:alive:"


def _clip(value: str, size: int) -> str:
    return value[:size]


def _publication(row: Row) -> Publication:
    body = row["body"]
    return Publication(
        username=row["username"],
        domain=row["domain"],
        event=row["event"],
        etag=row["etag"],
        expires=int(row["expires"]),
        received_time=int(row["received_time"]),
        body=bytes(body) if body is not None else b"",
        sender=row["sender"],
    )


def _subscription(row: Row) -> Subscription:
    route = row.get("record_route") or ""
    return Subscription(
        presentity_uri=row["presentity_uri"],
        event=row["event"],
        event_id=row.get("event_id") or "",
        watcher_user=row["watcher_username"],
        watcher_domain=row["watcher_domain"],
        to_user=row["to_user"],
        to_domain=row["to_domain"],
        from_user=row["from_user"],
        from_domain=row["from_domain"],
        callid=row["callid"],
        to_tag=row["to_tag"],
        from_tag=row["from_tag"],
        local_cseq=int(row["local_cseq"]),
        remote_cseq=int(row["remote_cseq"]),
        contact=row["contact"],
        route_set=split_list(route) if route else [],
        expires=int(row["expires"]),
        status=int(row["status"]),
        reason=row.get("reason") or "",
        version=int(row["version"]),
        socket_info=row["socket_info"],
        local_contact=row["local_contact"],
        user_agent=row.get("user_agent") or "",
    )


class PresenceStore:
    def __init__(self, db: Database, kv: KVStore) -> None:
        self.db = db
        self.kv = kv

    # -- presentity ------------------------------------------------------------------

    async def insert_publication(self, pub: Publication, ruid: str) -> None:
        await self.db.execute(
            "INSERT INTO presentity (username, domain, event, etag, expires, received_time,"
            " body, sender, priority, ruid) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,$9)",
            pub.username,
            pub.domain,
            pub.event,
            pub.etag,
            pub.expires,
            pub.received_time,
            pub.body,
            _clip(pub.sender, 255),
            ruid,
        )

    async def upsert_publication(self, pub: Publication, ruid: str) -> None:
        """Insert or replace the publication with this entity tag (call-derived state)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM presentity WHERE username=$1 AND domain=$2 AND event=$3 AND etag=$4",
                pub.username,
                pub.domain,
                pub.event,
                pub.etag,
            )
            await tx.execute(
                "INSERT INTO presentity (username, domain, event, etag, expires, received_time,"
                " body, sender, priority, ruid) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,$9)",
                pub.username,
                pub.domain,
                pub.event,
                pub.etag,
                pub.expires,
                pub.received_time,
                pub.body,
                _clip(pub.sender, 255),
                ruid,
            )

    async def swap_publication(self, pub: Publication, ruid: str, expected: bytes | None) -> bool:
        """Write ``pub`` only if the row with its entity tag still has the body
        ``expected`` (None: no row yet). False when another instance wrote it first:
        the caller re-reads and decides again (call events arrive on any instance)."""
        if expected is None:
            changed = await self.db.execute(
                "INSERT INTO presentity (username, domain, event, etag, expires, received_time,"
                " body, sender, priority, ruid) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,0,$9)"
                " ON CONFLICT (username, domain, event, etag) DO NOTHING",
                pub.username,
                pub.domain,
                pub.event,
                pub.etag,
                pub.expires,
                pub.received_time,
                pub.body,
                _clip(pub.sender, 255),
                ruid,
            )
        else:
            changed = await self.db.execute(
                "UPDATE presentity SET expires=$1, received_time=$2, body=$3, ruid=$4"
                " WHERE username=$5 AND domain=$6 AND event=$7 AND etag=$8 AND body=$9",
                pub.expires,
                pub.received_time,
                pub.body,
                ruid,
                pub.username,
                pub.domain,
                pub.event,
                pub.etag,
                expected,
            )
        return changed == 1

    async def get_publication(
        self, username: str, domain: str, event: str, etag: str
    ) -> Publication | None:
        row = await self.db.fetchrow(
            "SELECT * FROM presentity WHERE username=$1 AND domain=$2 AND event=$3 AND etag=$4",
            username,
            domain,
            event,
            etag,
        )
        return _publication(row) if row is not None else None

    async def replace_publication(
        self,
        old: Publication,
        new_etag: str,
        expires: int,
        received_time: int,
        body: bytes | None,
    ) -> bool:
        """Refresh (body None) or modify the publication tagged ``old.etag``; False when
        another request changed it first (the entity tag is then unknown: 412)."""
        changed = await self.db.execute(
            "UPDATE presentity SET etag=$5, expires=$6, received_time=$7, body=$8"
            " WHERE username=$1 AND domain=$2 AND event=$3 AND etag=$4",
            old.username,
            old.domain,
            old.event,
            old.etag,
            new_etag,
            expires,
            received_time,
            old.body if body is None else body,
        )
        return changed > 0

    async def delete_publication(self, username: str, domain: str, event: str, etag: str) -> bool:
        changed = await self.db.execute(
            "DELETE FROM presentity WHERE username=$1 AND domain=$2 AND event=$3 AND etag=$4",
            username,
            domain,
            event,
            etag,
        )
        return changed > 0

    async def publications(
        self, username: str, domain: str, event: str, now: int
    ) -> list[Publication]:
        """Live publications, newest first (the order of composition)."""
        rows = await self.db.fetch(
            "SELECT * FROM presentity WHERE username=$1 AND domain=$2 AND event=$3"
            " AND expires > $4 ORDER BY received_time DESC, id DESC",
            username,
            domain,
            event,
            now,
        )
        return [_publication(r) for r in rows]

    async def expired_publications(self, now: int) -> list[Row]:
        return await self.db.fetch(
            "SELECT id, username, domain, event, etag FROM presentity WHERE expires <= $1", now
        )

    async def delete_publication_id(self, row_id: int) -> bool:
        return await self.db.execute("DELETE FROM presentity WHERE id=$1", row_id) > 0

    async def publications_by_etag(self, event: str, etags: Sequence[str]) -> list[Publication]:
        out: list[Publication] = []
        for etag in etags:
            rows = await self.db.fetch(
                "SELECT * FROM presentity WHERE event=$1 AND etag=$2", event, etag
            )
            out.extend(_publication(r) for r in rows)
        return out

    # -- active_watchers ---------------------------------------------------------------

    def _sub_args(self, sub: Subscription, now: int) -> list[Any]:
        return [
            _clip(sub.presentity_uri, 255),
            _clip(sub.watcher_user, 64),
            _clip(sub.watcher_domain, 64),
            _clip(sub.to_user, 64),
            _clip(sub.to_domain, 64),
            sub.event,
            sub.event_id or None,
            sub.to_tag,
            sub.from_tag,
            sub.callid,
            sub.local_cseq,
            sub.remote_cseq,
            _clip(sub.contact, 255),
            ", ".join(sub.route_set) if sub.route_set else None,
            sub.expires,
            sub.status,
            sub.reason or None,
            sub.version,
            _clip(sub.socket_info, 64),
            _clip(sub.local_contact, 255),
            _clip(sub.from_user, 64),
            _clip(sub.from_domain, 64),
            now,
            now,
            _clip(sub.user_agent, 255),
        ]

    async def insert_subscription(self, sub: Subscription, now: int) -> bool:
        """False when the dialog exists already (a request handled twice)."""
        changed = await self.db.execute(
            "INSERT INTO active_watchers (presentity_uri, watcher_username, watcher_domain,"
            " to_user, to_domain, event, event_id, to_tag, from_tag, callid, local_cseq,"
            " remote_cseq, contact, record_route, expires, status, reason, version,"
            " socket_info, local_contact, from_user, from_domain, updated, updated_winfo,"
            " flags, user_agent) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,"
            "$16,$17,$18,$19,$20,$21,$22,$23,$24,0,$25)"
            " ON CONFLICT (callid, to_tag, from_tag) DO NOTHING",
            *self._sub_args(sub, now),
        )
        return changed > 0

    async def update_subscription(self, sub: Subscription, now: int) -> bool:
        changed = await self.db.execute(
            "UPDATE active_watchers SET local_cseq=$4, remote_cseq=$5, contact=$6,"
            " record_route=$7, expires=$8, status=$9, reason=$10, version=$11,"
            " socket_info=$12, local_contact=$13, updated=$14"
            " WHERE callid=$1 AND to_tag=$2 AND from_tag=$3",
            sub.callid,
            sub.to_tag,
            sub.from_tag,
            sub.local_cseq,
            sub.remote_cseq,
            _clip(sub.contact, 255),
            ", ".join(sub.route_set) if sub.route_set else None,
            sub.expires,
            sub.status,
            sub.reason or None,
            sub.version,
            _clip(sub.socket_info, 64),
            _clip(sub.local_contact, 255),
            now,
        )
        return changed > 0

    async def get_subscription(
        self, callid: str, to_tag: str, from_tag: str
    ) -> Subscription | None:
        row = await self.db.fetchrow(
            "SELECT * FROM active_watchers WHERE callid=$1 AND to_tag=$2 AND from_tag=$3",
            callid,
            to_tag,
            from_tag,
        )
        return _subscription(row) if row is not None else None

    async def delete_subscription(self, sub: Subscription) -> bool:
        changed = await self.db.execute(
            "DELETE FROM active_watchers WHERE callid=$1 AND to_tag=$2 AND from_tag=$3",
            sub.callid,
            sub.to_tag,
            sub.from_tag,
        )
        await self.kv.delete(_OWNER + sub.key)
        return changed > 0

    async def subscriptions_of(self, presentity_uri: str, event: str) -> list[Subscription]:
        rows = await self.db.fetch(
            "SELECT * FROM active_watchers WHERE presentity_uri=$1 AND event=$2 ORDER BY id",
            presentity_uri,
            event,
        )
        return [_subscription(r) for r in rows]

    async def all_subscriptions(self) -> list[Subscription]:
        rows = await self.db.fetch("SELECT * FROM active_watchers ORDER BY id")
        return [_subscription(r) for r in rows]

    # -- watchers (authorisation) ---------------------------------------------------

    async def watcher_status(
        self, presentity_uri: str, user: str, domain: str, event: str
    ) -> tuple[int, str] | None:
        row = await self.db.fetchrow(
            "SELECT status, reason FROM watchers WHERE presentity_uri=$1 AND"
            " watcher_username=$2 AND watcher_domain=$3 AND event=$4",
            presentity_uri,
            user,
            domain,
            event,
        )
        if row is None:
            return None
        return int(row["status"]), row.get("reason") or ""

    async def set_watcher(
        self, presentity_uri: str, user: str, domain: str, event: str, status: int, now: int
    ) -> None:
        """Record a decision (1 allow, 2 pending, 3 block); a later decision replaces it."""
        await self.db.execute(
            "INSERT INTO watchers (presentity_uri, watcher_username, watcher_domain, event,"
            " status, reason, inserted_time) VALUES ($1,$2,$3,$4,$5,NULL,$6)"
            " ON CONFLICT (presentity_uri, watcher_username, watcher_domain, event)"
            " DO UPDATE SET status=excluded.status",
            _clip(presentity_uri, 255),
            _clip(user, 64),
            _clip(domain, 64),
            event,
            status,
            now,
        )

    async def add_pending_watcher(
        self, presentity_uri: str, user: str, domain: str, event: str, now: int
    ) -> None:
        await self.db.execute(
            "INSERT INTO watchers (presentity_uri, watcher_username, watcher_domain, event,"
            " status, reason, inserted_time) VALUES ($1,$2,$3,$4,2,NULL,$5)"
            " ON CONFLICT (presentity_uri, watcher_username, watcher_domain, event) DO NOTHING",
            _clip(presentity_uri, 255),
            _clip(user, 64),
            _clip(domain, 64),
            event,
            now,
        )

    # -- ownership (KV) ----------------------------------------------------------------

    async def set_owner(self, sub: Subscription, instance: str, ttl: float) -> None:
        value = json.dumps({"owner": instance, **sub.flow.as_dict()}).encode()
        await self.kv.set(_OWNER + sub.key, value, ttl=max(ttl, 1.0))

    async def owners(self, keys: Sequence[str]) -> list[dict[str, Any] | None]:
        """The ownership records of several subscriptions in one round trip."""
        if not keys:
            return []
        raw = await self.kv.get_many([_OWNER + k for k in keys])
        return [json.loads(v) if v else None for v in raw]

    async def heartbeat(self, instance: str, ttl: float) -> None:
        await self.kv.set(_ALIVE + instance, b"1", ttl=ttl)

    async def alive(self, instances: Sequence[str]) -> dict[str, bool]:
        names = list(dict.fromkeys(instances))
        if not names:
            return {}
        raw = await self.kv.get_many([_ALIVE + i for i in names])
        return {name: value is not None for name, value in zip(names, raw, strict=True)}

    async def claim(self, key: str, instance: str, ttl: float) -> bool:
        """One instance wins the adoption of an orphaned subscription."""
        return await self.kv.set_if_absent("presence:claim:" + key, instance.encode(), ttl=ttl)


def flow_of(record: dict[str, Any] | None) -> Flow:
    return Flow.from_dict(record) if record else Flow()
