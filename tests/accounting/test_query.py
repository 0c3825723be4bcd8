"""Queries with filters and CSV/JSON export, on SQLite and PostgreSQL; `sipmesh ctl acc|cdr`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh.accounting.query import (
    QueryError,
    cdr_columns,
    make_filters,
    query_acc,
    query_cdrs,
    to_csv,
    to_json,
)
from sipmesh.accounting.records import plan
from sipmesh.accounting.store import RecordStore
from sipmesh.accounting.testing import Party, call_events
from sipmesh.state.bus import EventBus
from sipmesh.state.db import Database

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
CAROL = Party("carol", "example.org", "carol-tag", "198.51.100.7")


async def fill(db: Database) -> None:
    store = RecordStore(db, clock=lambda: T0)
    calls = [
        call_events("answered", "q-1", T0, talk=20.0),
        call_events("busy", "q-2", T0 + 60),
        call_events("answered", "q-3", T0 + 120, caller=CAROL, talk=5.0),
        call_events("cancelled", "q-4", T0 + 180, caller=CAROL),
    ]
    for events in calls:
        for env in events:
            await store.apply(env.id, plan(env))


async def test_filters(backends: tuple[Database, EventBus]) -> None:
    db, _ = backends
    await fill(db)
    all_acc = await query_acc(db)
    assert [(r["callid"], r["method"]) for r in all_acc] == [
        ("q-1", "INVITE"),
        ("q-1", "BYE"),
        ("q-3", "INVITE"),
        ("q-3", "BYE"),
    ]
    carol = await query_acc(db, "acc", make_filters(user="carol@example.org"))
    assert {r["callid"] for r in carol} == {"q-3"}
    missed_4xx = await query_acc(db, "missed_calls", make_filters(status="4xx"))
    assert [(r["callid"], r["sip_code"]) for r in missed_4xx] == [("q-2", "486"), ("q-4", "487")]
    window = await query_cdrs(db, make_filters(since="2023-11-14T22:14:00Z", until=str(T0 + 180)))
    assert [r["call_id"] for r in window] == ["q-2", "q-3"]
    assert [r["call_id"] for r in await query_cdrs(db, make_filters(user="carol"))] == [
        "q-3",
        "q-4",
    ]
    assert [r["call_id"] for r in await query_cdrs(db, make_filters(status="200"))] == [
        "q-1",
        "q-3",
    ]
    cancel = await query_cdrs(db, make_filters(end_reason="cancel"))
    assert [(r["call_id"], r["status"]) for r in cancel] == [("q-4", 487)]
    one = await query_cdrs(db, make_filters(call_id="q-1"))
    assert one[0]["duration"] == 20.0
    assert len(await query_cdrs(db, make_filters(limit=1, offset=1))) == 1
    # Export.
    text = to_csv(one, cdr_columns())
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["call_id"] == "q-1"
    assert parsed[0]["answer_time"] == "2023-11-14 22:13:22"
    assert parsed[0]["end_reason"] == "bye"
    data = json.loads(to_json(one))
    assert data[0]["end_time"] == "2023-11-14 22:13:42"


def test_bad_filters_are_rejected() -> None:
    with pytest.raises(QueryError):
        make_filters(since="yesterday-ish")
    with pytest.raises(QueryError):
        make_filters(status="9xx")
    with pytest.raises(QueryError):
        make_filters(limit=0)


async def test_ctl_acc_and_cdr_verbs(tmp_path: Path) -> None:
    from tests.accounting.helpers import migrated

    url = f"sqlite:///{tmp_path / 'ctl.db'}"
    db = await migrated(url)
    await fill(db)
    await db.close()

    def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sipmesh", "ctl", "--db", url, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = ctl("acc", "--missed", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["callid"], r["sip_code"]) for r in rows] == [("q-2", "486"), ("q-4", "487")]
    out = ctl("--json", "cdr", "--user", "carol", "--status", "2xx")
    assert out.returncode == 0, out.stderr
    assert [(c["call_id"], c["duration"]) for c in json.loads(out.stdout)] == [("q-3", 5.0)]
    out = ctl("cdr", "--ended-by", "busy")
    assert out.returncode == 0, out.stderr
    assert "q-2" in out.stdout
    assert "q-1" not in out.stdout
    out = ctl("acc", "--since", "not a time")
    assert out.returncode == 2
    assert "not a time" in out.stderr
