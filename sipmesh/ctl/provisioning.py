"""Subscriber provisioning straight on the tables (kamctl add/passwd/rm/show).

Credentials are stored as Kamailio's auth_db expects them: ``ha1`` =
MD5(user:realm:password) and ``ha1b`` = MD5(user@domain:realm:password), with the
realm equal to the domain (the registrar's default); the plaintext password only
when ``registrar.store_password`` is on. When the schema has ``ha1_sha256`` /
``ha1b_sha256`` columns, their SHA-256 counterparts are written too (RFC 8760).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sipmesh.registrar.aor import Aor
from sipmesh.registrar.subscribers import SHA256_COLUMNS, credential_columns, table_columns
from sipmesh.state.db import Database


class CtlError(Exception):
    """A failure reported as one line; ``status`` is the exit status (1 or 2)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SubscriberInfo:
    username: str
    domain: str
    password_stored: bool
    ha1_stored: bool
    sha256_stored: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "aor": f"{self.username}@{self.domain}",
            "username": self.username,
            "domain": self.domain,
            "password_stored": self.password_stored,
            "ha1_stored": self.ha1_stored,
            "sha256_stored": self.sha256_stored,
        }


async def _credentials(
    db: Database, aor: Aor, password: str, *, store_password: bool, realm: str
) -> dict[str, str]:
    if not password:
        raise CtlError("the password must not be empty", 2)
    columns = await table_columns(db, "subscriber")
    sha256 = all(c in columns for c in SHA256_COLUMNS)
    return credential_columns(
        aor.user, aor.domain, password, store_password=store_password, sha256=sha256, realm=realm
    )


async def add_subscriber(
    db: Database, aor: Aor, password: str, *, store_password: bool, realm: str = ""
) -> None:
    values = await _credentials(db, aor, password, store_password=store_password, realm=realm)
    async with db.transaction() as tx:
        exists = await tx.fetchval(
            "SELECT COUNT(*) FROM subscriber WHERE username = $1 AND domain = $2",
            aor.user,
            aor.domain,
        )
        if exists:
            raise CtlError(f"subscriber {aor} already exists")
        names = ["username", "domain", *values]
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
        await tx.execute(
            f"INSERT INTO subscriber ({', '.join(names)}) VALUES ({marks})",
            aor.user,
            aor.domain,
            *values.values(),
        )


async def change_password(
    db: Database, aor: Aor, password: str, *, store_password: bool, realm: str = ""
) -> None:
    values = await _credentials(db, aor, password, store_password=store_password, realm=realm)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(values, start=3))
    changed = await db.execute(
        f"UPDATE subscriber SET {sets} WHERE username = $1 AND domain = $2",
        aor.user,
        aor.domain,
        *values.values(),
    )
    if not changed:
        raise CtlError(f"no subscriber {aor}")


async def remove_subscriber(db: Database, aor: Aor) -> None:
    removed = await db.execute(
        "DELETE FROM subscriber WHERE username = $1 AND domain = $2", aor.user, aor.domain
    )
    if not removed:
        raise CtlError(f"no subscriber {aor}")


async def list_subscribers(db: Database, aor: Aor | None = None) -> list[SubscriberInfo]:
    if aor is None:
        rows = await db.fetch("SELECT * FROM subscriber ORDER BY domain, username")
    else:
        rows = await db.fetch(
            "SELECT * FROM subscriber WHERE username = $1 AND domain = $2", aor.user, aor.domain
        )
        if not rows:
            raise CtlError(f"no subscriber {aor}")
    return [
        SubscriberInfo(
            username=str(r["username"]),
            domain=str(r["domain"]),
            password_stored=bool(r.get("password")),
            ha1_stored=bool(r.get("ha1")),
            sha256_stored=bool(r.get("ha1_sha256")),
        )
        for r in rows
    ]
