"""The auth_db / alias_db / domain tables as the registrar reads them.

Rows are read per request, never cached: a subscriber added, changed or removed
with ``sipmesh ctl`` (or by any tool writing the table) is effective for the next
REGISTER on every instance (issue 5). The ``domain`` table is the exception: it
changes rarely and is asked on every REGISTER, so it is kept for a few seconds.

Columns follow Kamailio's schema: ``subscriber(username, domain, password, ha1,
ha1b)``; ``ha1`` is MD5(username:realm:password) and ``ha1b``
MD5(username@domain:realm:password). When the table also has ``ha1_sha256`` /
``ha1b_sha256`` columns, the same values for SHA-256 (RFC 8760) are used from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sipmesh.sip.digest import compute_ha1
from sipmesh.state.db import Database, Executor, Row

DOMAIN_CACHE_SECONDS = 5.0
SHA256_COLUMNS = ("ha1_sha256", "ha1b_sha256")


@dataclass(frozen=True, slots=True)
class Subscriber:
    username: str
    domain: str
    password: str
    ha1: str
    ha1b: str
    ha1_sha256: str = ""
    ha1b_sha256: str = ""

    @classmethod
    def from_row(cls, row: Row) -> Subscriber:
        return cls(
            username=str(row["username"]),
            domain=str(row["domain"]),
            password=str(row.get("password") or ""),
            ha1=str(row.get("ha1") or ""),
            ha1b=str(row.get("ha1b") or ""),
            ha1_sha256=str(row.get("ha1_sha256") or ""),
            ha1b_sha256=str(row.get("ha1b_sha256") or ""),
        )

    def stored_ha1(
        self, algorithm: str, realm: str, *, with_domain: bool, calculate: bool
    ) -> str | None:
        """The HA1 to verify ``algorithm`` with, or None when we cannot.

        ``with_domain``: the digest username was ``user@domain`` (ha1b). ``calculate``:
        Kamailio's calculate_ha1 — derive it from the plaintext password column.
        """
        account = f"{self.username}@{self.domain}" if with_domain else self.username
        base = algorithm.upper().removesuffix("-SESS")
        if calculate and self.password:
            return compute_ha1(base, account, realm, self.password)
        if base == "MD5":
            value = self.ha1b if with_domain else self.ha1
            # A 32-digit value is MD5; anything else was stored for another algorithm.
            return value.lower() if len(value) == 32 else None
        if base == "SHA-256":
            value = self.ha1b_sha256 if with_domain else self.ha1_sha256
            if not value:
                # An operator may store the SHA-256 HA1 in ``ha1`` itself (Kamailio's
                # auth_db does when its algorithm is SHA-256): 64 hex digits.
                legacy = self.ha1b if with_domain else self.ha1
                value = legacy if len(legacy) == 64 else ""
            return value.lower() or None
        if self.password:
            # Other algorithms need the password (no column of theirs exists).
            return compute_ha1(base, account, realm, self.password)
        return None


def credential_columns(
    username: str,
    domain: str,
    password: str,
    *,
    store_password: bool,
    sha256: bool,
    realm: str | None = None,
) -> dict[str, str]:
    """What ``sipmesh ctl add/passwd`` writes: HA1 values, the password if configured."""
    realm = realm or domain
    values = {
        "password": password if store_password else "",
        "ha1": compute_ha1("MD5", username, realm, password),
        "ha1b": compute_ha1("MD5", f"{username}@{domain}", realm, password),
    }
    if sha256:
        values["ha1_sha256"] = compute_ha1("SHA-256", username, realm, password)
        values["ha1b_sha256"] = compute_ha1("SHA-256", f"{username}@{domain}", realm, password)
    return values


async def table_columns(db: Executor, table: str) -> set[str]:
    """Column names of ``table`` (to use optional columns when the schema has them)."""
    if db.dialect == "sqlite":
        rows = await db.fetch(f"SELECT name FROM pragma_table_info('{table}')")
        return {str(r["name"]) for r in rows}
    rows = await db.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = $1 AND table_schema = current_schema()",
        table,
    )
    return {str(r["column_name"]) for r in rows}


class SubscriberDirectory:
    """Reads subscribers, aliases and domains; one query per question."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        self._domains: frozenset[str] = frozenset()
        self._domains_at = -1e18
        self.sha256_columns = False

    async def probe(self) -> None:
        """Learn once whether the schema stores SHA-256 HA1 values."""
        columns = await table_columns(self._db, "subscriber")
        self.sha256_columns = all(c in columns for c in SHA256_COLUMNS)

    async def get(
        self, username: str, domain: str, *, use_domain: bool = True
    ) -> Subscriber | None:
        if use_domain:
            row = await self._db.fetchrow(
                "SELECT * FROM subscriber WHERE username = $1 AND domain = $2", username, domain
            )
        else:
            row = await self._db.fetchrow(
                "SELECT * FROM subscriber WHERE username = $1 ORDER BY id LIMIT 1", username
            )
        return None if row is None else Subscriber.from_row(row)

    async def alias_target(self, alias_user: str, alias_domain: str) -> tuple[str, str] | None:
        """dbaliases: the account an alias AOR stands for (alias_db_lookup)."""
        row = await self._db.fetchrow(
            "SELECT username, domain FROM dbaliases WHERE alias_username = $1 "
            "AND alias_domain = $2",
            alias_user,
            alias_domain,
        )
        return None if row is None else (str(row["username"]), str(row["domain"]))

    async def table_domains(self) -> frozenset[str]:
        now = self._clock()
        if now - self._domains_at >= DOMAIN_CACHE_SECONDS:
            rows = await self._db.fetch("SELECT domain FROM domain")
            self._domains = frozenset(str(r["domain"]).lower() for r in rows)
            self._domains_at = now
        return self._domains
