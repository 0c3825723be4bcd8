"""The routing tables the default script reads, as one immutable in-memory snapshot.

Kamailio's permissions module caches the ``address`` table and reloads it on an RPC
command; sipmesh does the same for every table the router reads (``address``,
``speed_dial``, ``dbaliases``, ``domain``) so the hot path never queries the
database (DESIGN.md, Performance). A snapshot is loaded at start and by every hot
reload (``sipmesh ctl reload``), and swapped atomically: a request sees either the
old tables or the new ones, never a mix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sipmesh.state.db import Executor

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AddressEntry:
    """One row of the permissions ``address`` table."""

    grp: int
    network: IPNetwork
    port: int = 0  # 0 = any port
    tag: str | None = None


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class RoutingTables:
    addresses: tuple[AddressEntry, ...] = ()
    # (username, domain, sd_username) -> new_uri (speeddial's sd_lookup key).
    speed_dial: Mapping[tuple[str, str, str], str] = field(default_factory=_empty)
    # (alias_username, alias_domain) -> (username, domain) (alias_db_lookup).
    aliases: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=_empty)
    # Local domains from the ``domain`` table (WITH_MULTIDOMAIN), lower-case.
    domains: frozenset[str] = frozenset()

    def allow_source_address(self, ip: str, port: int = 0, grp: int = 1) -> str | None:
        """permissions' allow_source_address: the matching entry's tag ('' if none) or None.

        Returns None when no entry of ``grp`` covers ``ip`` (and ``port`` when the
        entry names one), so ``is not None`` means allowed.
        """
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        for entry in self.addresses:
            if entry.grp != grp or addr.version != entry.network.version:
                continue
            if addr in entry.network and (entry.port == 0 or entry.port == port):
                return entry.tag or ""
        return None

    def speed_dial_lookup(self, user: str, domain: str, short: str) -> str | None:
        """sd_lookup: the caller's entry for ``short``; rows without a domain match too."""
        key_domain = domain.lower()
        hit = self.speed_dial.get((user, key_domain, short))
        if hit is None:
            hit = self.speed_dial.get((user, "", short))
        return hit

    def alias_lookup(self, user: str, domain: str) -> tuple[str, str] | None:
        """alias_db_lookup: the canonical (user, domain) of an alias, or None."""
        return self.aliases.get((user, domain.lower())) or self.aliases.get((user, ""))


def _network(ip: str, mask: int) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(f"{ip.strip('[]')}/{mask}", strict=False)
    except ValueError:
        return None


def build_tables(
    address_rows: Iterable[Mapping[str, Any]] = (),
    speed_dial_rows: Iterable[Mapping[str, Any]] = (),
    alias_rows: Iterable[Mapping[str, Any]] = (),
    domain_rows: Iterable[Mapping[str, Any]] = (),
) -> RoutingTables:
    """A snapshot from rows shaped like Kamailio's tables; bad rows are skipped."""
    addresses: list[AddressEntry] = []
    for row in address_rows:
        ip = str(row.get("ip_addr") or "")
        default_mask = 128 if ":" in ip else 32
        mask_raw = row.get("mask")
        mask = int(mask_raw) if mask_raw is not None else default_mask
        # Kamailio stores 32 as the default mask for IPv6 rows too; treat it as a host.
        if ":" in ip and mask == 32:
            mask = 128
        network = _network(ip, mask)
        if network is None:
            continue
        addresses.append(
            AddressEntry(
                int(row.get("grp") or 1), network, int(row.get("port") or 0), row.get("tag")
            )
        )
    speed = {
        (
            str(r.get("username") or ""),
            str(r.get("domain") or "").lower(),
            str(r.get("sd_username") or ""),
        ): str(r["new_uri"])
        for r in speed_dial_rows
        if r.get("new_uri")
    }
    aliases = {
        (str(r.get("alias_username") or ""), str(r.get("alias_domain") or "").lower()): (
            str(r.get("username") or ""),
            str(r.get("domain") or "").lower(),
        )
        for r in alias_rows
        if r.get("username")
    }
    domains = frozenset(str(r["domain"]).lower() for r in domain_rows if r.get("domain"))
    return RoutingTables(
        tuple(addresses), MappingProxyType(speed), MappingProxyType(aliases), domains
    )


async def load_tables(db: Executor) -> RoutingTables:
    """Read the four tables; raises what the database raises (the caller keeps the old)."""
    address = await db.fetch("SELECT grp, ip_addr, mask, port, tag FROM address")
    speed = await db.fetch("SELECT username, domain, sd_username, new_uri FROM speed_dial")
    alias = await db.fetch("SELECT alias_username, alias_domain, username, domain FROM dbaliases")
    domain = await db.fetch("SELECT domain FROM domain")
    return build_tables(address, speed, alias, domain)
