"""The sipmesh command line: one-line errors, exit statuses, config show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sipmesh.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipmesh", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_unknown_target_exits_2_with_one_line() -> None:
    result = run_cli("serve", "--target", "nosuch")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "target" in lines[0]
    assert "nosuch" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--state", "mongodb://x"], "state"),
        (["--db", "mysql://x"], "db"),
        (["--listen", "udp:nowhere"], "listen"),
        (["--http", "9090"], "http"),
    ],
)
def test_bad_flags_exit_2_naming_the_key(
    args: list[str], key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sipmesh: invalid configuration: {key}")
    assert err.count("\n") == 1


def test_bad_environment_value_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIPMESH_GRACE_PERIOD", "forever")
    assert main(["config", "show"]) == 2
    assert "SIPMESH_GRACE_PERIOD" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    result = run_cli("serve", "--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert run_cli().returncode == 2


def test_config_show_prints_effective_values_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("registrar:\n  max_expires: 1800\n")
    result = run_cli(
        "config",
        "show",
        "--json",
        "--config",
        str(config),
        "--db",
        "postgresql://sip:topsecret@db/sipmesh",
        env={"SIPMESH_ADMIN_API__READ_TOKEN": "readtok"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["registrar"]["max_expires"] == 1800
    assert data["db"] == "postgresql://sip:***@db/sipmesh"
    assert "topsecret" not in result.stdout
    assert "readtok" not in result.stdout


def test_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("sipmesh ")
