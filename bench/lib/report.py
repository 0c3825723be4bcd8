"""The one table the runner prints (Markdown, so it can go into bench/README.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    scenario: str
    system: str
    rate: float  # calls (scenario runs) per second sustained
    p50_ms: float
    p99_ms: float
    p99_half_ms: float  # p99 at half the maximum rate
    cpu_us_per_call: float  # CPU of every server process / successful calls
    cpu_by_process: str
    peak_mb: float
    note: str = ""


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def table(rows: list[Row], baseline: str = "kamailio") -> str:
    """Rows grouped by scenario; every non-baseline figure also as a ratio."""
    base = {r.scenario: r for r in rows if r.system == baseline}
    out = [
        "| scenario | system | max rate/s | x Kamailio | p50 ms | p99 ms | p99 @½ rate ms "
        "| CPU µs/call | CPU x Kamailio | CPU by process (s) | peak MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k = base.get(r.scenario)
        ratio = _ratio(r.rate, k.rate) if k is not None and r is not k else ""
        cpu = _ratio(r.cpu_us_per_call, k.cpu_us_per_call) if k is not None and r is not k else ""
        out.append(
            f"| {r.scenario} | {r.system} | {r.rate:.0f} | {ratio} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.p99_half_ms:.1f} | {r.cpu_us_per_call:.0f} | {cpu} "
            f"| {r.cpu_by_process} | {r.peak_mb:.0f} | {r.note} |"
        )
    return "\n".join(out)
