"""``sipmesh ctl`` verbs of issue 11 through the real CLI entry point.

Against the admin service running in process (gRPC on its ``grpc`` address), and
the table verbs straight on the database as kamctl does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipmesh.cli import main
from tests.admin.embedded import DOMAIN, READ, WRITE, Embedded, threaded


@pytest.fixture(scope="module")
def sipmesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with threaded(tmp_path_factory.mktemp("ctl-admin")) as running:
        yield running


def ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["ctl", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def over_admin(s: Embedded, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return ctl(capsys, "--admin", s.grpc, "--token", WRITE, "--domain", DOMAIN, *argv)


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A working directory without admin-token, and no token in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIPMESH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SIPMESH_ADMIN_API__WRITE_TOKEN", raising=False)
    monkeypatch.delenv("SIPMESH_CONFIG", raising=False)
    return tmp_path


def test_token_from_option_env_config_or_token_file(
    sipmesh: Embedded,
    capsys: pytest.CaptureFixture[str],
    no_token: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = ("--admin", sipmesh.grpc, "--domain", DOMAIN)
    status, _, err = ctl(capsys, *api, "ping")
    assert status == 1
    assert "a valid admin token is required" in err
    assert "no token found: give --token, set SIPMESH_ADMIN_TOKEN, or run where" in err
    status, _, err = ctl(capsys, *api, "ul", "show")  # the ul verbs of commands.py too
    assert status == 1
    assert "no token found" in err
    status, _, err = ctl(capsys, *api, "--token", "guess", "ping")
    assert status == 1
    assert "wrong token: give --token" in err

    # The file `sipmesh serve` writes when no write token is configured: ./admin-token.
    (no_token / "admin-token").write_text(WRITE + "\n")
    assert ctl(capsys, *api, "domain", "add", "tokenfile.test")[0] == 0
    (no_token / "admin-token").unlink()
    elsewhere = no_token / "secret" / "token"
    elsewhere.parent.mkdir()
    elsewhere.write_text(WRITE)
    config = no_token / "sipmesh.yaml"
    config.write_text(f"admin_api:\n  token_file: {elsewhere}\n")
    assert ctl(capsys, "--config", str(config), *api, "domain", "rm", "tokenfile.test")[0] == 0
    config.write_text(f"admin_api:\n  write_token: {WRITE}\n")
    assert ctl(capsys, "--config", str(config), *api, "ping")[0] == 0

    # The environment: the read token reads, and may not write.
    monkeypatch.setenv("SIPMESH_ADMIN_TOKEN", READ)
    status, out, _ = ctl(capsys, *api, "stats", "core")
    assert status == 0
    assert out.startswith("# 1 instance(s)")
    status, _, err = ctl(capsys, *api, "ban", "add", "203.0.113.9")
    assert status == 1
    assert "may only read" in err
    # --token wins over the environment.
    assert ctl(capsys, *api, "--token", WRITE, "ban", "add", "203.0.113.9")[0] == 0
    assert ctl(capsys, *api, "--token", WRITE, "ban", "rm", "203.0.113.9")[0] == 0


def test_ping_uptime_stats(sipmesh: Embedded, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = over_admin(sipmesh, capsys, "ping")
    assert status == 0
    assert out.startswith("pong from embedded-1 (sipmesh 0.1.0)")
    status, out, _ = over_admin(sipmesh, capsys, "uptime")
    assert status == 0
    assert out.splitlines()[0].split() == ["instance", "state", "uptime", "services", "version"]
    assert "embedded-1  up" in out
    status, out, _ = over_admin(sipmesh, capsys, "stats", "usrloc")
    assert status == 0
    assert out.splitlines()[0] == "# 1 instance(s)"
    assert "usrloc:registered_contacts = 0" in out
    status, out, _ = over_admin(sipmesh, capsys, "--json", "stats")
    assert json.loads(out)["instances"][0]["instance"] == "embedded-1"


def test_ul_add_show_rm(sipmesh: Embedded, capsys: pytest.CaptureFixture[str]) -> None:
    aor = f"erin@{DOMAIN}"
    status, out, _ = over_admin(sipmesh, capsys, "ul", "add", aor, "sip:erin@192.0.2.4:5062", "120")
    assert (status, out.strip()) == (0, f"{aor}: <sip:erin@192.0.2.4:5062> added (120s)")
    status, out, err = over_admin(sipmesh, capsys, "ul", "add", aor, "bogus")
    assert status == 2
    assert "not a sip:" in err


def test_ban_cfg_reload_dispatcher(sipmesh: Embedded, capsys: pytest.CaptureFixture[str]) -> None:
    assert over_admin(sipmesh, capsys, "ban", "add", "203.0.113.5", "60", "test")[0] == 0
    status, out, _ = over_admin(sipmesh, capsys, "ban", "show")
    assert status == 0
    assert "203.0.113.5" in out
    assert "test" in out
    assert over_admin(sipmesh, capsys, "ban", "rm", "203.0.113.5")[0] == 0
    status, _, err = over_admin(sipmesh, capsys, "ban", "rm", "203.0.113.5")
    assert status == 1
    assert "is not banned" in err
    assert over_admin(sipmesh, capsys, "ban", "add", "not-an-ip")[0] == 2

    assert over_admin(sipmesh, capsys, "cfg", "set", "pstn", "gw_ip", "192.0.2.77")[0] == 0
    status, out, _ = over_admin(sipmesh, capsys, "cfg", "get", "pstn")
    assert "pstn.gw_ip = 192.0.2.77" in out.splitlines()
    assert over_admin(sipmesh, capsys, "cfg", "get", "nosuch")[0] == 1
    status, out, _ = over_admin(sipmesh, capsys, "cfg", "set", "core", "debug", "info")
    assert (status, out.strip()) == (0, "log level INFO")

    status, out, _ = over_admin(sipmesh, capsys, "reload")
    assert status == 0
    assert out.startswith("embedded-1: ok ")

    assert over_admin(sipmesh, capsys, "dispatcher", "add", "2", "sip:192.0.2.20:5060")[0] == 0
    assert over_admin(sipmesh, capsys, "dispatcher", "add", "2", "sip:192.0.2.20:5060")[0] == 1
    args = ("dispatcher", "set-state", "inactive", "2", "sip:192.0.2.20:5060")
    assert over_admin(sipmesh, capsys, *args)[0] == 0
    status, out, _ = over_admin(sipmesh, capsys, "dispatcher", "show", "2")
    row = out.splitlines()[1].split()
    assert row[:3] == ["2", "sip:192.0.2.20:5060", "IP"]
    assert over_admin(sipmesh, capsys, "dispatcher", "reload")[0] == 0
    assert over_admin(sipmesh, capsys, "dispatcher", "rm", "2", "sip:192.0.2.20:5060")[0] == 0


def test_table_verbs_straight_on_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'tables.sqlite'}", "--domain", DOMAIN]
    assert ctl(capsys, *db, "domain", "add", "example.org")[0] == 0
    status, _, err = ctl(capsys, *db, "domain", "add", "example.org")
    assert status == 1
    assert "already exists" in err
    status, out, _ = ctl(capsys, *db, "domain", "show")
    assert out.splitlines()[1].split() == ["example.org", "example.org"]
    assert ctl(capsys, *db, "alias", "add", f"sales@{DOMAIN}", f"alice@{DOMAIN}")[0] == 0
    status, out, _ = ctl(capsys, *db, "alias", "show")
    assert out.splitlines()[1].split() == [f"sales@{DOMAIN}", f"alice@{DOMAIN}"]
    assert ctl(capsys, *db, "alias", "rm", f"sales@{DOMAIN}")[0] == 0
    assert ctl(capsys, *db, "alias", "rm", f"sales@{DOMAIN}")[0] == 1
    sd = ("speeddial", "add", f"alice@{DOMAIN}", "11", f"sip:bob@{DOMAIN}", "bob")
    assert ctl(capsys, *db, *sd)[0] == 0
    status, out, _ = ctl(capsys, *db, "--json", "speeddial", "show", f"alice@{DOMAIN}")
    assert json.loads(out)["entries"][0]["new_uri"] == f"sip:bob@{DOMAIN}"
    assert ctl(capsys, *db, "address", "add", "1", "192.0.2.0", "24", "5060", "pbx")[0] == 0
    status, out, _ = ctl(capsys, *db, "address", "show")
    assert out.splitlines()[1].split()[1:] == ["1", "192.0.2.0", "24", "5060", "pbx"]
    assert ctl(capsys, *db, "address", "add", "1", "999.1.1.1")[0] == 2
    assert ctl(capsys, *db, "lcr", "gw-add", "1", "gw1", "192.0.2.30", "5060")[0] == 0
    assert ctl(capsys, *db, "lcr", "rule-add", "1", "49")[0] == 0
    assert ctl(capsys, *db, "lcr", "target-add", "1", "1", "1", "1")[0] == 0
    status, out, _ = ctl(capsys, *db, "--json", "lcr", "show")
    tables = json.loads(out)
    assert tables["gateways"][0]["gw_name"] == "gw1"
    assert tables["targets"][0]["gw_id"] == "1"
    dp = ("dialplan", "add", "1", "1", "regex", "^00(.*)$", "^00(.*)$", "+\\1")
    assert ctl(capsys, *db, *dp)[0] == 0
    status, out, _ = ctl(capsys, *db, "dialplan", "translate", "1", "004930")
    assert out.startswith("004930 -> +4930 (rule 1")
    assert ctl(capsys, *db, "dialplan", "add", "1", "1", "bogus", "x", "", "")[0] == 2
    # Live verbs need the admin API: with nothing listening, a one-line failure.
    status, _, err = ctl(capsys, *db, "--admin", "127.0.0.1:1", "ping")
    assert status == 1
    assert err.startswith("sipmesh ctl:")
