"""Offline messages (Kamailio's msilo): MESSAGE (RFC 3428 pager mode) to a user
without a binding is stored in ``silo`` and answered 202 Accepted (m_store); when
the user registers (the registrar's ``sipmesh.registration.added`` event) the
messages are sent to the new contact in the order they arrived (m_dump), each
removed only after a 2xx from the recipient; on any failure the rest wait for the
next registration.

A message being delivered is claimed first (``status`` 1 with ``snd_time``), so two
instances (or two bindings registering at once) never send it twice; a claim older
than the transaction timeout is considered abandoned and taken again.
"""

from __future__ import annotations

import email.utils
import logging
import secrets
import uuid

from sipmesh.clients.errors import ServiceError
from sipmesh.clients.interfaces import EdgeClient
from sipmesh.gen.sipmesh.v1 import common_pb2, edge_pb2, presence_pb2
from sipmesh.presence.model import split_uri
from sipmesh.presence.notifier import presence_via
from sipmesh.presence.replies import Reject, reply
from sipmesh.runtime.sections.presence import PresenceConfig
from sipmesh.sip import Request
from sipmesh.state.db import Database, Row

log = logging.getLogger("sipmesh.presence")

CLAIM_STALE = 64  # seconds: 2 x Timer F


class MessageStore:
    def __init__(self, config: PresenceConfig, db: Database, edge: EdgeClient | None) -> None:
        self._config = config
        self._db = db
        self.edge = edge
        self.stored = 0
        self.dumped = 0
        self.failed = 0

    async def store(self, request: Request, now: int) -> presence_pb2.HandleReply:
        """m_store: keep the MESSAGE for its recipient and answer 202 Accepted."""
        if request.method != "MESSAGE":
            raise Reject(405, "Method Not Allowed", [("Allow", "MESSAGE")])
        user, domain = split_uri(request.uri)
        if not user:
            raise Reject(404, "Not Found")
        limit = self._config.msilo_max_messages
        if limit:
            count = await self._db.fetchval(
                "SELECT COUNT(*) FROM silo WHERE username=$1 AND domain=$2 AND exp_time > $3",
                user,
                domain,
                now,
            )
            if int(count or 0) >= limit:
                raise Reject(486, "Busy Here - Mailbox Full")
        ctype = request.get("Content-Type") or "text/plain"
        extra = ""
        date = request.get("Date")
        if date:
            extra = f"Date: {date}\r\n"
        await self._db.execute(
            "INSERT INTO silo (src_addr, dst_addr, username, domain, inc_time, exp_time,"
            " snd_time, ctype, body, extra_hdrs, callid, status)"
            " VALUES ($1,$2,$3,$4,$5,$6,0,$7,$8,$9,$10,0)",
            str(request.from_.uri)[:255],
            str(request.to.uri)[:255],
            user[:64],
            domain[:64],
            now,
            now + self._config.msilo_expire_time,
            ctype[:255],
            request.body,
            extra,
            request.call_id[:128],
        )
        self.stored += 1
        return reply(request, 202, "Accepted")

    async def pending(self, user: str, domain: str, now: int) -> list[Row]:
        return await self._db.fetch(
            "SELECT * FROM silo WHERE username=$1 AND domain=$2 AND exp_time > $3 ORDER BY id",
            user,
            domain,
            now,
        )

    async def deliver(self, binding: common_pb2.Binding, now: int) -> int:
        """m_dump: send the stored messages of the binding's AOR to it, in order."""
        user, _, domain = binding.aor.rpartition("@")
        if not user:
            user, domain = domain, ""
        if not domain:
            user, domain = split_uri(binding.contact)[0] or user, split_uri(binding.contact)[1]
        delivered = 0
        for row in await self.pending(user, domain.lower(), now):
            claimed = await self._db.execute(
                "UPDATE silo SET status=1, snd_time=$2 WHERE id=$1 AND (status=0 OR snd_time < $3)",
                row["id"],
                now,
                now - CLAIM_STALE,
            )
            if not claimed:
                continue
            ok = await self._send(row, binding)
            if ok:
                await self._db.execute("DELETE FROM silo WHERE id=$1", row["id"])
                self.dumped += 1
                delivered += 1
                continue
            await self._db.execute("UPDATE silo SET status=0 WHERE id=$1", row["id"])
            self.failed += 1
            break  # keep the order: the rest waits for the next registration
        return delivered

    async def _send(self, row: Row, binding: common_pb2.Binding) -> bool:
        edge = self.edge
        if edge is None:
            return False
        request = message_request(row, binding)
        out = common_pb2.OutboundRequest(
            kind=common_pb2.OutboundRequest.KIND_REQUEST, raw=bytes(request)
        )
        if binding.edge_id:
            out.edge_id = binding.edge_id
            out.flow_id = binding.flow_id
            out.flow_token = binding.flow_token
            if binding.flow_id and binding.source.host:
                out.destination.CopyFrom(binding.source)
        try:
            result = await edge.send(out, timeout=34.0)
            if result.outcome == edge_pb2.SendResult.OUTCOME_NO_FLOW and out.edge_id:
                plain = common_pb2.OutboundRequest(kind=out.kind, raw=out.raw)
                result = await edge.send(plain, timeout=34.0)
        except ServiceError as exc:
            log.debug("offline message %s not delivered: %s", row["id"], exc)
            return False
        return result.outcome == edge_pb2.SendResult.OUTCOME_RESPONSE and 200 <= result.status < 300

    async def expire(self, now: int) -> int:
        return await self._db.execute("DELETE FROM silo WHERE exp_time <= $1", now)


def message_request(row: Row, binding: common_pb2.Binding) -> Request:
    """The stored MESSAGE as a new request to the contact (RFC 3428 §4: a new
    transaction outside any dialog), with the original time in Date (RFC 3261 §20.17)."""
    body = row["body"]
    payload = bytes(body) if body is not None else b""
    headers: list[tuple[str, str]] = [("Via", presence_via(row["dst_addr"]))]
    headers += [("Route", p) for p in binding.path]
    headers += [
        ("Max-Forwards", "70"),
        ("From", f"<{row['src_addr']}>;tag={secrets.token_hex(6)}"),
        ("To", f"<{row['dst_addr']}>"),
        ("Call-ID", f"msilo-{uuid.uuid4().hex}"),
        ("CSeq", "1 MESSAGE"),
    ]
    extra = row.get("extra_hdrs") or ""
    if "Date:" not in extra:
        headers.append(("Date", email.utils.formatdate(int(row["inc_time"]), usegmt=True)))
    for line in extra.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), value.strip()))
    headers.append(("Content-Type", row["ctype"] or "text/plain"))
    headers.append(("Content-Length", str(len(payload))))
    return Request("MESSAGE", binding.contact, headers, payload)
