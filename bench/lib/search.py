"""Step search for the highest rate a scenario sustains.

A step passes when fewer than 0.1 % of its calls failed and retransmissions stay
below ``max_retrans`` per call (a server that keeps up answers before sipp's 500 ms
T1 fires; runaway retransmissions mean it is queueing). The search climbs a
coarse ladder of rates and stops at the first failing step, then tries the
midpoint once: coarse on purpose, so the whole benchmark stays short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.lib.sipp import SippRun

MAX_FAILED = 0.001


@dataclass
class SearchResult:
    best: SippRun | None
    steps: list[SippRun] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.best.rate if self.best is not None else 0.0


def passes(run: SippRun, max_retrans: float = 0.05) -> bool:
    done = run.successful + run.failed
    if done < run.calls * 0.999 or run.returncode == -1:
        return False
    return run.failure_ratio < MAX_FAILED and run.retransmissions <= max_retrans * run.calls


def ladder(start: float, factor: float, top: float) -> list[float]:
    rates: list[float] = []
    rate = start
    while rate <= top:
        rates.append(float(round(rate)))
        rate *= factor
    return rates


def find_max(
    attempt: Callable[[float], SippRun],
    rates: list[float],
    *,
    refine: bool = True,
    max_retrans: float = 0.05,
) -> SearchResult:
    """Climb ``rates`` until a step fails; then try the midpoint of the last gap."""
    result = SearchResult(best=None)
    failed_at: float | None = None
    for rate in rates:
        run = attempt(rate)
        result.steps.append(run)
        if not passes(run, max_retrans):
            failed_at = rate
            break
        result.best = run
    if refine and failed_at is not None and result.best is not None:
        mid = round((result.best.rate + failed_at) / 2)
        if result.best.rate < mid < failed_at:
            run = attempt(mid)
            result.steps.append(run)
            if passes(run, max_retrans):
                result.best = run
    return result
