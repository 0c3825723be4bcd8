"""``sipmesh ctl`` provisioning and ul verbs through the real CLI entry point.

SQLite and the real PostgreSQL for the tables; the real Redis for ``ul`` with
``--state redis://``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sipmesh.cli import main
from sipmesh.registrar.persistence import write_aor
from sipmesh.runtime.backends import KEY_PREFIX
from sipmesh.sip.digest import compute_ha1
from sipmesh.state.factory import open_db, open_location
from sipmesh.state.location import Binding


def _fetch(url: str, sql: str, *args: object) -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        db = await open_db(url)
        try:
            return await db.fetch(sql, *args)
        finally:
            await db.close()

    return asyncio.run(run())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ctl.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["ctl", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_add_show_passwd_rm(
    db_url: str, capsys: pytest.CaptureFixture[str], unique_prefix: str
) -> None:
    user = f"alice{unique_prefix}"
    aor = f"{user}@example.com"
    assert ctl(capsys, "--db", db_url, "add", aor, "s3cret")[0] == 0
    status, _, err = ctl(capsys, "--db", db_url, "add", aor, "other")
    assert status == 1
    assert "already exists" in err
    (row,) = _fetch(db_url, "SELECT * FROM subscriber WHERE username = $1", user)
    assert row["ha1"] == compute_ha1("MD5", user, "example.com", "s3cret")
    assert row["ha1b"] == compute_ha1("MD5", aor, "example.com", "s3cret")
    assert row["password"] == ""  # HA1-only by default

    status, out, _ = ctl(capsys, "--db", db_url, "--json", "show", aor)
    assert status == 0
    assert json.loads(out) == [
        {
            "aor": aor,
            "username": user,
            "domain": "example.com",
            "password_stored": False,
            "ha1_stored": True,
            "sha256_stored": False,
        }
    ]
    status, out, _ = ctl(capsys, "--db", db_url, "show")
    assert status == 0
    assert f"{aor}  ha1=yes  password=not stored" in out

    assert ctl(capsys, "--db", db_url, "passwd", aor, "n3w")[0] == 0
    (row,) = _fetch(db_url, "SELECT ha1 FROM subscriber WHERE username = $1", user)
    assert row["ha1"] == compute_ha1("MD5", user, "example.com", "n3w")

    assert ctl(capsys, "--db", db_url, "rm", aor)[0] == 0
    assert ctl(capsys, "--db", db_url, "rm", aor)[0] == 1
    assert ctl(capsys, "--db", db_url, "show", aor)[0] == 1
    assert ctl(capsys, "--db", db_url, "passwd", aor, "x")[0] == 1


def test_store_password_when_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'pw.sqlite'}"
    monkeypatch.setenv("SIPMESH_REGISTRAR__STORE_PASSWORD", "true")
    assert ctl(capsys, "--db", url, "add", "bob@example.com", "pw")[0] == 0
    (row,) = _fetch(url, "SELECT password FROM subscriber WHERE username = 'bob'")
    assert row["password"] == "pw"


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'u.sqlite'}"
    assert ctl(capsys, "--db", url, "add", "alice@example.com")[0] == 2
    assert ctl(capsys, "--db", url, "add", "@@bad", "pw")[0] == 2
    assert ctl(capsys, "--db", url, "add", "alice@example.com", "")[0] == 2
    assert ctl(capsys, "--db", "mysql://x", "show")[0] == 2
    assert ctl(capsys, "--db", url, "frobnicate")[0] == 2


def test_ul_on_the_table_with_memory_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ul.sqlite'}"
    assert ctl(capsys, "--db", url, "show")[0] == 0  # creates the schema

    async def seed() -> None:
        db = await open_db(url)
        now = __import__("time").time()
        bindings = [
            Binding(aor="carol@example.com", contact=f"sip:c@10.0.0.{i}", expires_at=now + 600)
            for i in (1, 2)
        ]
        bindings = [b.__class__(**{**b.to_dict(), "ruid": f"r{i}"}) for i, b in enumerate(bindings)]
        async with db.transaction() as tx:
            await write_aor(tx, "carol@example.com", bindings, True)
        await db.close()

    asyncio.run(seed())
    status, out, _ = ctl(capsys, "--db", url, "ul", "show", "carol@example.com")
    assert status == 0
    assert "carol@example.com  <sip:c@10.0.0.1>  expires in 5" in out
    status, out, _ = ctl(capsys, "--db", url, "ul", "rm", "carol@example.com", "sip:c@10.0.0.1")
    assert status == 0
    status, out, _ = ctl(capsys, "--db", url, "--json", "ul", "show", "carol@example.com")
    assert [b["contact"] for b in json.loads(out)] == ["sip:c@10.0.0.2"]
    assert ctl(capsys, "--db", url, "ul", "rm", "carol@example.com")[0] == 0
    status, _, err = ctl(capsys, "--db", url, "ul", "show", "carol@example.com")
    assert status == 1
    assert "not registered" in err


@pytest.mark.redis
def test_ul_on_the_redis_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str, unique_prefix: str
) -> None:
    url = f"sqlite:///{tmp_path / 'ulr.sqlite'}"
    aor = f"dave@{unique_prefix}.example.com"  # the real key prefix: a unique domain

    async def seed() -> None:
        store = open_location(redis_url, prefix=KEY_PREFIX)
        now = __import__("time").time()
        await store.update(
            aor,
            lambda cur: [
                Binding(aor=aor, contact="sip:d@10.0.0.7", expires_at=now + 300, edge_id="e9")
            ],
        )
        await store.close()

    async def cleanup() -> list[Binding]:
        store = open_location(redis_url, prefix=KEY_PREFIX)
        try:
            return await store.remove(aor)
        finally:
            await store.close()

    asyncio.run(seed())
    try:
        status, out, _ = ctl(capsys, "--db", url, "--state", redis_url, "--json", "ul", "show", aor)
        assert status == 0
        (shown,) = json.loads(out)
        assert (shown["contact"], shown["edge_id"]) == ("sip:d@10.0.0.7", "e9")
        status, out, _ = ctl(capsys, "--db", url, "--state", redis_url, "ul", "rm", aor)
        assert status == 0
        assert "1 binding(s) removed" in out
    finally:
        left = asyncio.run(cleanup())
    assert left == []
