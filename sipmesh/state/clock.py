"""The injectable clock of the memory backends (fake clocks in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Returns the current time in epoch seconds, like ``time.time``.
Clock = Callable[[], float]

#: The default clock.
system_clock: Clock = time.time


class FakeClock:
    """A manually advanced clock for tests: ``clock()`` returns ``clock.now``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
