"""``sipmesh ctl add-bulk FILE``: provision many subscribers in one transaction.

``ctl add`` checks for an existing row and inserts one subscriber per process
start, which is far too slow for a benchmark pool of 10,000 users. Here the file
(one ``USER@DOMAIN PASSWORD`` or ``USER@DOMAIN;PASSWORD`` per line, ``#`` comments)
is read once, the credentials are computed as ``ctl add`` computes them
(HA1/HA1B, SHA-256 variants when the schema has them) and written with a single
``executemany``. Existing subscribers with the same username/domain are replaced,
so a benchmark can re-provision the same pool.
"""

from __future__ import annotations

from pathlib import Path

from sipmesh.ctl.provisioning import CtlError
from sipmesh.registrar.aor import Aor, AorError, parse_aor
from sipmesh.registrar.subscribers import SHA256_COLUMNS, credential_columns, table_columns
from sipmesh.state.db import Database


def read_bulk_file(path: Path, default_domain: str) -> list[tuple[Aor, str]]:
    """The (AOR, password) pairs of a bulk file; a bad line is a usage error (2)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc}", 2) from None
    pairs: list[tuple[Aor, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        aor_text, _, password = line.replace(";", " ", 1).partition(" ")
        password = password.strip()
        if not password:
            raise CtlError(f"{path}:{number}: expected USER@DOMAIN PASSWORD", 2)
        try:
            pairs.append((parse_aor(aor_text, default_domain), password))
        except AorError as exc:
            raise CtlError(f"{path}:{number}: {exc}", 2) from None
    return pairs


async def add_bulk(
    db: Database,
    pairs: list[tuple[Aor, str]],
    *,
    store_password: bool,
    realm: str = "",
) -> int:
    """Insert (or replace) every subscriber of ``pairs`` in one transaction."""
    if not pairs:
        return 0
    columns = await table_columns(db, "subscriber")
    sha256 = all(c in columns for c in SHA256_COLUMNS)
    rows: list[list[str]] = []
    names: list[str] = []
    for aor, password in pairs:
        values = credential_columns(
            aor.user,
            aor.domain,
            password,
            store_password=store_password,
            sha256=sha256,
            realm=realm,
        )
        names = ["username", "domain", *values]
        rows.append([aor.user, aor.domain, *values.values()])
    marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    async with db.transaction() as tx:
        await tx.executemany(
            "DELETE FROM subscriber WHERE username = $1 AND domain = $2",
            [(aor.user, aor.domain) for aor, _ in pairs],
        )
        await tx.executemany(f"INSERT INTO subscriber ({', '.join(names)}) VALUES ({marks})", rows)
    return len(rows)
