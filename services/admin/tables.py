"""Aliases (dbaliases), speed dial, domains and the permissions ``address`` table.

Plain table data, written straight to Kamailio's tables as kamctl does; the router
caches these and picks changes up on ``reload`` (services/router/tables.py).
"""

from __future__ import annotations

from sipmesh.admin import validate as v
from sipmesh.admin.base import AdminBase, audited
from sipmesh.clients.errors import AlreadyExists, InvalidArgument, NotFound
from sipmesh.gen.sipmesh.v1 import admin_pb2
from sipmesh.state.errors import ConstraintViolation


def _exists(what: str) -> AlreadyExists:
    return AlreadyExists(f"{what} already exists")


class TableOps(AdminBase):
    # -- dbaliases -----------------------------------------------------------------------

    def _alias(self, a: admin_pb2.Alias, *, full: bool) -> tuple[str, str, str, str]:
        default = self.config.domains[0] if self.config.domains else ""
        alias_domain = v.token(a.alias_domain or default, "alias_domain")
        alias_user = v.token(a.alias_username, "alias_username")
        if not full:
            return alias_user, alias_domain, "", ""
        return (
            alias_user,
            alias_domain,
            v.token(a.username, "username"),
            v.token(a.domain or default, "domain"),
        )

    @audited("alias.add")
    async def alias_add(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        au, ad, u, d = self._alias(request, full=True)
        try:
            async with self.db.transaction() as tx:
                if await tx.fetchval(
                    "SELECT COUNT(*) FROM dbaliases "
                    "WHERE alias_username = $1 AND alias_domain = $2",
                    au,
                    ad,
                ):
                    raise _exists(f"alias {au}@{ad}")
                await tx.execute(
                    "INSERT INTO dbaliases (alias_username, alias_domain, username, domain) "
                    "VALUES ($1, $2, $3, $4)",
                    au,
                    ad,
                    u,
                    d,
                )
        except ConstraintViolation:
            raise _exists(f"alias {au}@{ad}") from None
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("alias.rm")
    async def alias_remove(
        self, request: admin_pb2.Alias, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        au, ad, _, _ = self._alias(request, full=False)
        n = await self.db.execute(
            "DELETE FROM dbaliases WHERE alias_username = $1 AND alias_domain = $2", au, ad
        )
        if not n:
            raise NotFound(f"no alias {au}@{ad}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    async def alias_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AliasListReply:
        offset, limit = v.page(request.page_token, request.limit)
        v.text(request.filter, "filter", 64)
        v.text(request.domain, "domain", 64)
        rows = await self.db.fetch(
            "SELECT * FROM dbaliases WHERE ($1 = '' OR alias_domain = $1 OR domain = $1) "
            "AND ($2 = '' OR alias_username LIKE $2 || '%' OR username LIKE $2 || '%') "
            "ORDER BY alias_domain, alias_username LIMIT $3 OFFSET $4",
            request.domain,
            request.filter,
            limit + 1,
            offset,
        )
        return admin_pb2.AliasListReply(
            aliases=[
                admin_pb2.Alias(
                    alias_username=r["alias_username"],
                    alias_domain=r["alias_domain"],
                    username=r["username"],
                    domain=r["domain"],
                )
                for r in rows[:limit]
            ],
            next_page_token=str(offset + limit) if len(rows) > limit else "",
        )

    # -- speed_dial ----------------------------------------------------------------------

    def _speed_dial(self, s: admin_pb2.SpeedDial) -> tuple[str, str, str, str]:
        default = self.config.domains[0] if self.config.domains else ""
        return (
            v.token(s.username, "username"),
            v.token(s.domain or default, "domain"),
            v.token(s.sd_username, "sd_username"),
            v.token(s.sd_domain or s.domain or default, "sd_domain"),
        )

    @audited("speeddial.add")
    async def speed_dial_add(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        u, d, su, sd = self._speed_dial(request)
        uri = v.sip_uri(request.new_uri, "new_uri")
        desc = v.text(request.description, "description", 64)
        try:
            async with self.db.transaction() as tx:
                if await tx.fetchval(
                    "SELECT COUNT(*) FROM speed_dial WHERE username = $1 AND domain = $2 "
                    "AND sd_username = $3 AND sd_domain = $4",
                    u,
                    d,
                    su,
                    sd,
                ):
                    raise _exists(f"speed dial {su} of {u}@{d}")
                await tx.execute(
                    "INSERT INTO speed_dial (username, domain, sd_username, sd_domain, new_uri, "
                    "description) VALUES ($1, $2, $3, $4, $5, $6)",
                    u,
                    d,
                    su,
                    sd,
                    uri,
                    desc,
                )
        except ConstraintViolation:
            raise _exists(f"speed dial {su} of {u}@{d}") from None
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("speeddial.rm")
    async def speed_dial_remove(
        self, request: admin_pb2.SpeedDial, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        u, d, su, sd = self._speed_dial(request)
        n = await self.db.execute(
            "DELETE FROM speed_dial WHERE username = $1 AND domain = $2 AND sd_username = $3 "
            "AND sd_domain = $4",
            u,
            d,
            su,
            sd,
        )
        if not n:
            raise NotFound(f"no speed dial {su} of {u}@{d}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    async def speed_dial_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.SpeedDialListReply:
        offset, limit = v.page(request.page_token, request.limit)
        v.text(request.filter, "filter", 64)
        v.text(request.domain, "domain", 64)
        rows = await self.db.fetch(
            "SELECT * FROM speed_dial WHERE ($1 = '' OR domain = $1) "
            "AND ($2 = '' OR username = $2) ORDER BY domain, username, sd_username "
            "LIMIT $3 OFFSET $4",
            request.domain,
            request.filter,
            limit + 1,
            offset,
        )
        return admin_pb2.SpeedDialListReply(
            entries=[
                admin_pb2.SpeedDial(
                    username=r["username"],
                    domain=r["domain"],
                    sd_username=r["sd_username"],
                    sd_domain=r["sd_domain"],
                    new_uri=r["new_uri"],
                    description=r["description"],
                )
                for r in rows[:limit]
            ],
            next_page_token=str(offset + limit) if len(rows) > limit else "",
        )

    # -- domain --------------------------------------------------------------------------

    @audited("domain.add")
    async def domain_add(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        domain = v.token(request.domain, "domain").lower()
        did = v.text(request.did, "did", 64) or domain
        for name, value in request.attrs.items():
            v.text(name, "attrs name", 32, required=True)
            v.text(value, "attrs value", 255)
        try:
            async with self.db.transaction() as tx:
                if await tx.fetchval("SELECT COUNT(*) FROM domain WHERE domain = $1", domain):
                    raise _exists(f"domain {domain}")
                await tx.execute("INSERT INTO domain (domain, did) VALUES ($1, $2)", domain, did)
                for name, value in request.attrs.items():
                    await tx.execute(
                        "INSERT INTO domain_attrs (did, name, type, value) VALUES ($1, $2, 2, $3)",
                        did,
                        name,
                        value,
                    )
        except ConstraintViolation:
            raise _exists(f"domain {domain}") from None
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("domain.rm")
    async def domain_remove(
        self, request: admin_pb2.Domain, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        domain = v.token(request.domain, "domain").lower()
        async with self.db.transaction() as tx:
            did = await tx.fetchval("SELECT did FROM domain WHERE domain = $1", domain)
            n = await tx.execute("DELETE FROM domain WHERE domain = $1", domain)
            if (
                n
                and did
                and not await tx.fetchval("SELECT COUNT(*) FROM domain WHERE did = $1", did)
            ):
                await tx.execute("DELETE FROM domain_attrs WHERE did = $1", did)
        if not n:
            raise NotFound(f"no domain {domain}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    async def domain_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.DomainListReply:
        v.text(request.filter, "filter", 64)
        rows = await self.db.fetch(
            "SELECT * FROM domain WHERE ($1 = '' OR domain LIKE '%' || $1 || '%') ORDER BY domain",
            request.filter,
        )
        attrs = await self.db.fetch("SELECT did, name, value FROM domain_attrs")
        by_did: dict[str, dict[str, str]] = {}
        for a in attrs:
            by_did.setdefault(str(a["did"]), {})[str(a["name"])] = str(a["value"])
        return admin_pb2.DomainListReply(
            domains=[
                admin_pb2.Domain(
                    domain=r["domain"], did=r["did"] or "", attrs=by_did.get(str(r["did"]), {})
                )
                for r in rows
            ]
        )

    # -- address (permissions) -----------------------------------------------------------

    def _address(self, a: admin_pb2.AddressEntry) -> tuple[int, str, int, int]:
        grp = v.number(a.grp or 1, "grp", v.UINT_INTEGER)
        ip = v.ip_address(a.ip_addr, "ip_addr")
        width = 32 if ":" not in ip else 128
        mask = v.number(a.mask or width, "mask", (0, width))
        port = v.number(a.port, "port", (0, 65535))
        if port > v.SMALLINT[1]:
            # Kamailio's column is a SMALLINT; keep the table usable by Kamailio's tools.
            raise InvalidArgument(f"port: {port} does not fit the address table (max 32767)")
        return grp, ip, mask, port

    @audited("address.add")
    async def address_add(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        grp, ip, mask, port = self._address(request)
        tag = v.text(request.tag, "tag", 64)
        async with self.db.transaction() as tx:
            if await tx.fetchval(
                "SELECT COUNT(*) FROM address WHERE grp = $1 AND ip_addr = $2 AND mask = $3 "
                "AND port = $4",
                grp,
                ip,
                mask,
                port,
            ):
                raise _exists(f"address {ip}/{mask}:{port} in group {grp}")
            await tx.execute(
                "INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES ($1, $2, $3, $4, $5)",
                grp,
                ip,
                mask,
                port,
                tag,
            )
        return admin_pb2.WriteReply(affected=1, message="added")

    @audited("address.rm")
    async def address_remove(
        self, request: admin_pb2.AddressEntry, *, timeout: float | None = None
    ) -> admin_pb2.WriteReply:
        if request.id:
            v.number(request.id, "id", v.UINT_INTEGER)
            n = await self.db.execute("DELETE FROM address WHERE id = $1", request.id)
            what = f"address id {request.id}"
        else:
            grp, ip, mask, port = self._address(request)
            n = await self.db.execute(
                "DELETE FROM address WHERE grp = $1 AND ip_addr = $2 AND mask = $3 AND port = $4",
                grp,
                ip,
                mask,
                port,
            )
            what = f"address {ip}/{mask}:{port} in group {grp}"
        if not n:
            raise NotFound(f"no {what}")
        return admin_pb2.WriteReply(affected=n, message="removed")

    async def address_list(
        self, request: admin_pb2.ListRequest, *, timeout: float | None = None
    ) -> admin_pb2.AddressListReply:
        grp = 0
        if request.filter:
            try:
                grp = int(request.filter)
            except ValueError:
                raise InvalidArgument("filter: the address group, a number") from None
            v.number(grp, "filter", v.UINT_INTEGER)
        rows = await self.db.fetch(
            "SELECT * FROM address WHERE ($1 = 0 OR grp = $1) ORDER BY grp, id", grp
        )
        return admin_pb2.AddressListReply(
            entries=[
                admin_pb2.AddressEntry(
                    id=int(r["id"]),
                    grp=int(r["grp"]),
                    ip_addr=r["ip_addr"],
                    mask=int(r["mask"]),
                    port=int(r["port"]),
                    tag=r["tag"] or "",
                )
                for r in rows
            ]
        )
