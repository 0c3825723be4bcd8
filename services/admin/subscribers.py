"""Subscribers (kamctl add / passwd / rm / show) on Kamailio's ``subscriber`` table.

Credentials are written as auth_db reads them: ``ha1`` = MD5(user:realm:password),
``ha1b`` = MD5(user@domain:realm:password) (RFC 2617 §3.2.2.2), the SHA-256 pair
too when the schema has those columns (RFC 8760 §2), the plaintext password only
when ``registrar.store_password`` is on. The realm is ``registrar.realm`` or the
domain, as the registrar challenges.
"""

from __future__ import annotations

from sipmesh.admin import validate as v
from sipmesh.admin.base import AdminBase, audited
from sipmesh.clients.errors import AlreadyExists, NotFound
from sipmesh.gen.sipmesh.v1 import admin_pb2
from sipmesh.sip.digest import compute_ha1
from sipmesh.state.db import Executor, Row
from sipmesh.state.errors import ConstraintViolation

SHA256_COLUMNS = ("ha1_sha256", "ha1b_sha256")


async def table_columns(db: Executor, table: str) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.fetch(f"SELECT name FROM pragma_table_info('{table}')")
        return {str(r["name"]) for r in rows}
    rows = await db.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = $1 AND table_schema = current_schema()",
        table,
    )
    return {str(r["column_name"]) for r in rows}


def _subscriber(row: Row) -> admin_pb2.Subscriber:
    return admin_pb2.Subscriber(
        id=int(row["id"]),
        username=str(row["username"]),
        domain=str(row["domain"]),
        email_address=str(row.get("email_address") or ""),
        rpid=str(row.get("rpid") or ""),
        has_plaintext_password=bool(row.get("password")),
    )


class SubscriberOps(AdminBase):
    def _domain(self, domain: str) -> str:
        if not domain:
            domain = self.config.domains[0] if self.config.domains else ""
        return v.token(domain, "domain")

    async def _credentials(self, username: str, domain: str, password: str) -> dict[str, str]:
        v.text(password, "password", 64, required=True)
        reg = self.config.registrar
        realm = reg.realm or domain
        values = {
            "password": password if reg.store_password else "",
            "ha1": compute_ha1("MD5", username, realm, password),
            "ha1b": compute_ha1("MD5", f"{username}@{domain}", realm, password),
        }
        columns = await table_columns(self.db, "subscriber")
        if all(c in columns for c in SHA256_COLUMNS):
            values["ha1_sha256"] = compute_ha1("SHA-256", username, realm, password)
            values["ha1b_sha256"] = compute_ha1("SHA-256", f"{username}@{domain}", realm, password)
        if "email_address" in columns:
            values["email_address"] = ""
        return values

    @audited("subscriber.add")
    async def subscriber_add(
        self, request: admin_pb2.SubscriberAddRequest, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber:
        username = v.token(request.username, "username")
        domain = self._domain(request.domain)
        v.text(request.email_address, "email_address", 128)
        values = await self._credentials(username, domain, request.password)
        if "email_address" in values:
            values["email_address"] = request.email_address
        names = ["username", "domain", *values]
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        try:
            async with self.db.transaction() as tx:
                exists = await tx.fetchval(
                    "SELECT COUNT(*) FROM subscriber WHERE username = $1 AND domain = $2",
                    username,
                    domain,
                )
                if exists:
                    raise AlreadyExists(f"subscriber {username}@{domain} already exists")
                await tx.execute(
                    f"INSERT INTO subscriber ({', '.join(names)}) VALUES ({marks})",
                    username,
                    domain,
                    *values.values(),
                )
        except ConstraintViolation:  # a concurrent add won the race
            raise AlreadyExists(f"subscriber {username}@{domain} already exists") from None
        return await self._show(username, domain)

    @audited("subscriber.passwd")
    async def subscriber_passwd(
        self, request: admin_pb2.SubscriberPasswdRequest, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        username = v.token(request.username, "username")
        domain = self._domain(request.domain)
        values = await self._credentials(username, domain, request.password)
        values.pop("email_address", None)
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=3))
        changed = await self.db.execute(
            f"UPDATE subscriber SET {sets} WHERE username = $1 AND domain = $2",
            username,
            domain,
            *values.values(),
        )
        if not changed:
            raise NotFound(f"no subscriber {username}@{domain}")
        return admin_pb2.WriteReply(affected=changed, message="password changed")

    @audited("subscriber.rm")
    async def subscriber_remove(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        username = v.token(request.username, "username")
        domain = self._domain(request.domain)
        removed = await self.db.execute(
            "DELETE FROM subscriber WHERE username = $1 AND domain = $2", username, domain
        )
        if not removed:
            raise NotFound(f"no subscriber {username}@{domain}")
        return admin_pb2.WriteReply(affected=removed, message="removed")

    async def _show(self, username: str, domain: str) -> admin_pb2.Subscriber:
        row = await self.db.fetchrow(
            "SELECT * FROM subscriber WHERE username = $1 AND domain = $2", username, domain
        )
        if row is None:
            raise NotFound(f"no subscriber {username}@{domain}")
        return _subscriber(row)

    async def subscriber_show(
        self, request: admin_pb2.SubscriberKey, *, timeout: float | None = None
    ) -> admin_pb2.Subscriber:
        return await self._show(v.token(request.username, "username"), self._domain(request.domain))

    async def subscriber_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SubscriberListReply:
        offset, limit = v.page(request.page_token, request.limit)
        v.text(request.filter, "filter", 64)
        v.text(request.domain, "domain", 64)
        rows = await self.db.fetch(
            "SELECT * FROM subscriber WHERE ($1 = '' OR domain = $1) "
            "AND ($2 = '' OR username LIKE $2 || '%') "
            "ORDER BY domain, username LIMIT $3 OFFSET $4",
            request.domain,
            request.filter,
            limit + 1,
            offset,
        )
        more = len(rows) > limit
        return admin_pb2.SubscriberListReply(
            subscribers=[_subscriber(r) for r in rows[:limit]],
            next_page_token=str(offset + limit) if more else "",
        )
