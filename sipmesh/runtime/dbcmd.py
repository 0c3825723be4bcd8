"""``sipmesh db init|migrate``: create or upgrade the schema (kamdbctl's job)."""

from __future__ import annotations

import sys

from sipmesh.runtime.config import mask_url


async def run_db_command(command: str, url: str) -> int:
    from sipmesh.state.errors import StateUnavailable
    from sipmesh.state.factory import open_db
    from sipmesh.state.schema import init_schema, migrate

    try:
        db = await open_db(url)
    except StateUnavailable as exc:
        print(f"sipmesh: cannot open {mask_url(url)}: {exc}", file=sys.stderr)
        return 1
    try:
        if command == "init":
            await init_schema(db)
        else:
            await migrate(db)
    except StateUnavailable as exc:
        print(f"sipmesh: db {command} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.close()
    print(f"sipmesh: schema {'created' if command == 'init' else 'up to date'} in {mask_url(url)}")
    return 0
