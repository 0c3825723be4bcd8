"""sipmesh ctl add-bulk: many subscribers in one transaction (sipmesh/ctl/bulk.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh.ctl.bulk import add_bulk, read_bulk_file
from sipmesh.ctl.provisioning import CtlError
from sipmesh.sip.digest import compute_ha1
from sipmesh.state.factory import open_db
from sipmesh.state.schema import migrate


def test_read_bulk_file_accepts_spaces_semicolons_comments(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("# pool\nalice@example.com s1\n\nbob;s2\n")
    pairs = read_bulk_file(path, "example.org")
    assert [(str(a), p) for a, p in pairs] == [
        ("alice@example.com", "s1"),
        ("bob@example.org", "s2"),
    ]


def test_read_bulk_file_rejects_a_line_without_password(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("alice@example.com s1\nbob@example.com\n")
    with pytest.raises(CtlError) as err:
        read_bulk_file(path, "")
    assert err.value.status == 2
    assert ":2:" in str(err.value)


async def test_add_bulk_writes_ha1_and_replaces_existing(tmp_path: Path) -> None:
    db = await open_db(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await migrate(db)
        path = tmp_path / "users.txt"
        path.write_text("".join(f"u{i}@example.com pw{i}\n" for i in range(50)))
        assert await add_bulk(db, read_bulk_file(path, ""), store_password=False) == 50
        path.write_text("u7@example.com changed\n")
        assert await add_bulk(db, read_bulk_file(path, ""), store_password=False) == 1
        assert await db.fetchval("SELECT COUNT(*) FROM subscriber") == 50
        row = await db.fetchrow(
            "SELECT ha1, password FROM subscriber WHERE username = $1 AND domain = $2",
            "u7",
            "example.com",
        )
        assert row is not None
        assert row["ha1"] == compute_ha1("MD5", "u7", "example.com", "changed")
        assert row["password"] == ""
    finally:
        await db.close()


def test_ctl_add_bulk_command(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text("carol@example.com c-pw\ndave@example.com d-pw\n")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    run = [sys.executable, "-m", "sipmesh", "ctl", "--db", db]
    out = subprocess.run([*run, "add-bulk", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 subscriber(s) added" in out.stdout
    shown = subprocess.run([*run, "show"], capture_output=True, text=True, timeout=60)
    assert "carol@example.com" in shown.stdout
    assert "dave@example.com" in shown.stdout
