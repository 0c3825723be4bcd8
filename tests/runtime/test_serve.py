"""Process-level tuning done by ``sipmesh serve`` once the modules have started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sipmesh.runtime.serve import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    built_at_start_up: list[list[int]] = [[i] for i in range(10)]
    assert id(built_at_start_up[0]) in {id(o) for o in gc.get_objects()}
    tune_gc(20_000)
    # Frozen objects live in the permanent generation, which no collection walks.
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert id(built_at_start_up[0]) not in {id(o) for o in gc.get_objects()}
    assert gc.get_threshold()[0] == 20_000


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_zero_keeps_the_threshold() -> None:
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() > 0
