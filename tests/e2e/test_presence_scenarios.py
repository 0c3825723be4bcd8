"""The presence sipp scenarios load in sipp (the end-to-end runs through
``sipmesh serve`` are written with the runtime once the edge is complete).

Each scenario is run once against a closed port on 127.0.0.1 with a one-second
global timeout: a scenario sipp cannot load stops before any call with its parse
error; a loaded one runs, times out and prints its statistics screen."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

_SIPP = ["sipp", "127.0.0.1:9", "-m", "1", "-i", "127.0.0.1", "-p", "0", "-nostdin"]
_SIPP += ["-timeout", "1", "-timeout_error"]

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed"),
]


@pytest.mark.parametrize(
    "name", ["subscribe_presence.xml", "publish_open.xml", "message_offline.xml"]
)
def test_scenario_loads(name: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [*_SIPP, "-sf", str(SCENARIOS / name), "-s", "alice"],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert "scenario file" not in output.lower(), output[-2000:]
    assert "Test Terminated" in output, output[-2000:]


def test_broken_scenario_is_detected(tmp_path: Path) -> None:
    """The check above tells a loading failure apart (guards the test itself)."""
    broken = tmp_path / "broken.xml"
    broken.write_text(
        '<?xml version="1.0"?><scenario name="x"><send><![CDATA[]]></send></scenario>\n'
    )
    proc = subprocess.run(
        [*_SIPP, "-sf", str(broken)],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert "Test Terminated" not in output, output[-2000:]
