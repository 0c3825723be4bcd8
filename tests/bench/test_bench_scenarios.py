"""Correctness of the sipp benchmark scenarios of bench/scenarios against a real sipmesh.

Each scenario the runner (bench/run) measures is run here at a low rate against a
real ``sipmesh serve --target edge,router,registrar`` provisioned through
``sipmesh ctl add-bulk``, and must complete every call with no failure. No timing
is asserted: the rates and response times are the benchmark's business.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.lib import systems  # noqa: E402
from bench.lib.search import passes  # noqa: E402
from bench.lib.sipp import run, start_uas  # noqa: E402

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]

DOMAIN = "bench.test"
PASSWORD = "bench-pw"
USERS = [f"u{i}" for i in range(30)]
CALLS = 12


def inf(path: Path, rows: list[str]) -> Path:
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    return path


def auth_field(user: str) -> str:
    return f"[authentication username={user} password={PASSWORD}]"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'bench.sqlite'}"
    bulk = systems.write_bulk_file(
        tmp_path / "users.txt", [*USERS, "uascall", "uasmsg"], DOMAIN, PASSWORD
    )
    systems.provision_sipmesh(url, bulk)
    return url


def _system(tmp_path: Path, db_url: str, auth: bool) -> Iterator[systems.System]:
    system = systems.start_embedded(tmp_path / f"sipmesh-{auth}", db_url, DOMAIN, auth)
    try:
        yield system
    finally:
        system.stop()


@pytest.fixture
def with_auth(tmp_path: Path, db_url: str) -> Iterator[systems.System]:
    yield from _system(tmp_path, db_url, True)


@pytest.fixture
def without_auth(tmp_path: Path, db_url: str) -> Iterator[systems.System]:
    yield from _system(tmp_path, db_url, False)


def test_register_without_auth(without_auth: systems.System, tmp_path: Path) -> None:
    users = inf(tmp_path / "reg.csv", [f"{u};{DOMAIN}" for u in USERS])
    result = run(
        without_auth.remote, "register.xml", workdir=tmp_path / "r", rate=20, calls=CALLS, inf=users
    )
    assert result.successful == CALLS, result.output
    assert result.failed == 0
    assert passes(result)


def test_register_with_auth_over_a_user_pool(with_auth: systems.System, tmp_path: Path) -> None:
    users = inf(tmp_path / "reg.csv", [f"{u};{DOMAIN};{auth_field(u)}" for u in USERS])
    result = run(
        with_auth.remote,
        "register_auth.xml",
        workdir=tmp_path / "r",
        rate=20,
        calls=CALLS,
        inf=users,
    )
    assert result.successful == CALLS, result.output
    assert result.failed == 0
    assert result.p50_ms >= 0
    assert result.p99_ms >= result.p50_ms
    # Each call authenticated as its own user: a wrong password for one user fails.
    bad = inf(tmp_path / "bad.csv", [f"u1;{DOMAIN};[authentication username=u1 password=nope]"])
    wrong = run(
        with_auth.remote,
        "register_auth.xml",
        workdir=tmp_path / "w",
        rate=5,
        calls=1,
        inf=bad,
        timeout=3,
    )
    assert wrong.successful == 0


def test_options(with_auth: systems.System, tmp_path: Path) -> None:
    users = inf(tmp_path / "o.csv", [f"{u};{DOMAIN}" for u in USERS])
    result = run(
        with_auth.remote, "options.xml", workdir=tmp_path / "o", rate=20, calls=CALLS, inf=users
    )
    assert result.successful == CALLS, result.output
    assert result.failed == 0


@pytest.mark.parametrize(
    ("scenario", "uas_scenario", "callee"),
    [("call.xml", "uas_call.xml", "uascall"), ("message.xml", "uas_message.xml", "uasmsg")],
)
def test_call_and_message_to_a_registered_uas(
    with_auth: systems.System, tmp_path: Path, scenario: str, uas_scenario: str, callee: str
) -> None:
    port = systems.free_port()
    reg = run(
        with_auth.remote,
        "register_auth.xml",
        workdir=tmp_path / "reg",
        rate=1,
        calls=1,
        inf=inf(tmp_path / "callee.csv", [f"{callee};{DOMAIN};{auth_field(callee)}"]),
        extra=["-p", str(port)],
    )
    assert reg.successful == 1, reg.output
    uas: subprocess.Popen[bytes] = start_uas(tmp_path / "uas", port, uas_scenario)
    try:
        rows = [f"{u};{DOMAIN};{auth_field(u)};{callee}" for u in USERS]
        result = run(
            with_auth.remote,
            scenario,
            workdir=tmp_path / "c",
            rate=10,
            calls=CALLS,
            inf=inf(tmp_path / "calls.csv", rows),
        )
        assert result.successful == CALLS, result.output
        assert result.failed == 0
    finally:
        uas.kill()
        uas.wait(5)
