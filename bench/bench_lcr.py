#!/usr/bin/env python3
"""Benchmark: LCR with a large rule table — load time and lookups per second.

Builds ``--rules`` lcr_rule rows (distinct E.164-like prefixes of 4 to 9 digits,
two targets each over 50 gateways), then times:

- build: rows -> the in-memory prefix index (what a reload does after the fetch);
- sqlite: optionally (``--sqlite``) the same rows inserted into a SQLite database
  and loaded through ``load_lcr`` (fetch + build);
- lookup: ``load_gws`` for random 11-digit numbers (each probes one key per prefix
  length), reported as lookups per second and microseconds per lookup.

It is a script, not a test: the numbers depend on the machine. Usage:

    .venv/bin/python bench/bench_lcr.py [--rules 1000000] [--lookups 200000] [--sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from sipmesh.router.lcr import build_lcr, load_lcr
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate

GATEWAYS = 50


def make_rows(count: int, seed: int = 1) -> tuple[list[dict[str, Any]], ...]:
    rng = random.Random(seed)
    gws = [
        {"id": g, "lcr_id": 1, "gw_name": f"gw{g}", "ip_addr": f"10.0.{g // 250}.{g % 250 + 1}"}
        for g in range(1, GATEWAYS + 1)
    ]
    prefixes: set[str] = set()
    while len(prefixes) < count:
        length = rng.randint(4, 9)
        prefixes.add(str(rng.randrange(10 ** (length - 1), 10**length)))
    rules = []
    targets = []
    for rule_id, prefix in enumerate(sorted(prefixes), start=1):
        rules.append({"id": rule_id, "lcr_id": 1, "prefix": prefix, "enabled": 1})
        for n, gw in enumerate(rng.sample(range(1, GATEWAYS + 1), 2)):
            targets.append({"rule_id": rule_id, "gw_id": gw, "priority": n, "weight": 1})
    return gws, rules, targets


async def sqlite_load(
    gws: list[dict[str, Any]], rules: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = await open_db(f"sqlite:///{Path(tmp) / 'lcr.sqlite'}", op_timeout=600)
        try:
            await migrate(db)
            await db.executemany(
                "INSERT INTO lcr_gw (id, lcr_id, gw_name, ip_addr, flags) "
                "VALUES ($1, $2, $3, $4, 0)",
                [(g["id"], 1, g["gw_name"], g["ip_addr"]) for g in gws],
            )
            await db.executemany(
                "INSERT INTO lcr_rule (id, lcr_id, prefix, stopper, enabled) "
                "VALUES ($1, 1, $2, 0, 1)",
                [(r["id"], r["prefix"]) for r in rules],
            )
            await db.executemany(
                "INSERT INTO lcr_rule_target (lcr_id, rule_id, gw_id, priority, weight) "
                "VALUES (1, $1, $2, $3, $4)",
                [(t["rule_id"], t["gw_id"], t["priority"], t["weight"]) for t in targets],
            )
            start = time.perf_counter()
            tables = await load_lcr(db)
            return time.perf_counter() - start, tables.rule_count
        finally:
            await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--sqlite", action="store_true", help="also time a load from SQLite")
    args = parser.parse_args()

    gws, rules, targets = make_rows(args.rules)
    gc.collect()
    start = time.perf_counter()
    tables = build_lcr(gws, rules, targets)
    build_s = time.perf_counter() - start
    print(f"rules {tables.rule_count}")
    print(f"build_seconds {build_s:.3f}")
    if args.sqlite:
        load_s, loaded = asyncio.run(sqlite_load(gws, rules, targets))
        print(f"sqlite_load_seconds {load_s:.3f} ({loaded} rules)")

    rng = random.Random(2)
    numbers = [str(rng.randrange(10**10, 10**11)) for _ in range(args.lookups)]
    matched = 0
    start = time.perf_counter()
    for number in numbers:
        if tables.load_gws(1, number, "sip:alice@example.com", "", "INVITE", now=0.0):
            matched += 1
    lookup_s = time.perf_counter() - start
    print(f"lookups {args.lookups} matched {matched}")
    print(f"lookups_per_second {args.lookups / lookup_s:.0f}")
    print(f"us_per_lookup {lookup_s / args.lookups * 1e6:.2f}")


if __name__ == "__main__":
    main()
