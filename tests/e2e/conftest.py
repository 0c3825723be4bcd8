"""Fixtures for end-to-end tests: real `sipmesh serve` processes and sipp."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import SipmeshProcess, make_process


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def embedded(workdir: Path) -> Iterator[SipmeshProcess]:
    """sipmesh with every service in one process and embedded state."""
    proc = make_process("embedded", workdir, extra_args=["--domain", "sipmesh.test"])
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
