"""``sipmesh ctl ul show|rm``: the location store given by --state, or the table.

With ``--state redis://…`` the live bindings are read and removed in the shared
store (what every registrar instance sees), and the ``location`` table is brought in
line when persistence is on. With the embedded ``memory`` state the live bindings
live inside the running sipmesh process; then ``ul`` works on the ``location``
table (what a restart would load) and says so — live changes go through the admin
API (a later issue).
"""

from __future__ import annotations

from sipmesh.registrar.aor import Aor
from sipmesh.registrar.core import same_contact
from sipmesh.registrar.persistence import read_all, write_aor
from sipmesh.state.db import Database
from sipmesh.state.location import Binding, LocationStore, sort_bindings


async def show(
    store: LocationStore | None, db: Database, aor: str | None, *, use_domain: bool, now: float
) -> list[Binding]:
    if store is not None:
        if aor:
            return await store.get(aor)
        aors = await store.list_aors()
        by_aor = await store.get_many(aors)
        return [b for a in aors for b in by_aor.get(a, [])]
    table = await read_all(db, use_domain, now)
    if aor:
        return sort_bindings(table.get(aor, []))
    return [b for a in sorted(table) for b in sort_bindings(table[a])]


async def remove(
    store: LocationStore | None,
    db: Database,
    aor: str,
    contact: str,
    *,
    use_domain: bool,
    persist: bool,
    now: float,
) -> int:
    """Remove every binding of ``aor`` (or one contact); returns how many."""

    def keep(b: Binding) -> bool:
        return bool(contact) and not same_contact(b.contact, contact)

    removed = 0
    if store is not None:
        gone: list[Binding] = []

        def drop(current: list[Binding]) -> list[Binding]:
            gone[:] = [b for b in current if not keep(b)]
            return [b for b in current if keep(b)]

        left = await store.update(aor, drop)
        removed = len(gone)
        if persist:
            async with db.transaction() as tx:
                await write_aor(tx, aor, left, use_domain)
        return removed
    rows = (await read_all(db, use_domain, now)).get(aor, [])
    left = [b for b in rows if keep(b)]
    async with db.transaction() as tx:
        await write_aor(tx, aor, left, use_domain)
    return len(rows) - len(left)


def key_of(aor: Aor, use_domain: bool) -> str:
    return aor.key(use_domain)
