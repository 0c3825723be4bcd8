"""The Dockerfile, checked without a container engine: its stages and instructions,
and the wheel its builder stage makes from exactly what the Dockerfile copies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from sipmesh.runtime.config import TARGETS

REPO = Path(__file__).resolve().parents[2]


def _stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages


def test_final_stage_is_slim_non_root_and_checks_ready() -> None:
    stages = _stages()
    assert len(stages) == 2
    final = dict(stages[-1])
    assert final["FROM"].startswith("${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in (REPO / "Dockerfile").read_text()
    user = final["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert "/ready" in final["HEALTHCHECK"]
    assert "SIPMESH_HTTP" in final["HEALTHCHECK"]
    assert json.loads(final["ENTRYPOINT"]) == ["sipmesh"]
    assert json.loads(final["CMD"]) == ["serve"]
    final_runs = " ".join(rest for word, rest in stages[-1] if word == "RUN")
    for tool in ("build-essential", "gcc", "apt-get install"):
        assert tool not in final_runs
    assert "--no-index" in final_runs
    builder_runs = " ".join(rest for word, rest in stages[0] if word == "RUN")
    assert "build-essential" in builder_runs


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "tests", "*.sqlite"} <= ignored
    copied = [rest.split()[0] for word, rest in _stages()[0] if word == "COPY"]
    for source in copied:
        assert source.rstrip("/") not in ignored, source


def test_builder_copies_make_a_wheel_with_every_target(tmp_path: Path) -> None:
    """Build the wheel from only what the builder stage COPYs (symlinks kept, as
    Docker's COPY does): every service package must be inside it."""
    context = tmp_path / "src"
    context.mkdir()
    for word, rest in _stages()[0]:
        if word != "COPY":
            continue
        *sources, _dest = rest.split()
        for source in sources:
            path = REPO / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(
                    path,
                    context / path.name,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
            else:
                shutil.copy2(path, context / path.name)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    result = subprocess.run(
        [*pip, "-w", str(tmp_path / "wheels"), str(context)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("sipmesh-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for target in TARGETS:
        package = "sipmesh/" + target.replace("-", "_")
        assert f"{package}/__init__.py" in names, target
        service_dir = REPO / "services" / target
        for module in service_dir.glob("*.py"):
            assert f"{package}/{module.name}" in names, (target, module.name)
    assert "sipmesh/cli.py" in names
    assert any(n.startswith("sipmesh/state/sql/") and n.endswith(".sql") for n in names)
