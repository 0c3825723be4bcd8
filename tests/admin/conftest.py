"""Fixtures of the admin tests: an in-process sipmesh with the admin target."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.admin.embedded import Embedded, embedded


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Embedded]:
    async with embedded(tmp_path) as running:
        yield running
