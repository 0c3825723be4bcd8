"""Transaction timers (RFC 3261 §17 and Table 4 of Appendix A; RFC 6026 §8.11)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TimerConfig"]


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """T1/T2/T4 and the values derived from them.

    Defaults are RFC 3261's: T1 = 500 ms (RTT estimate), T2 = 4 s (cap of non-INVITE
    and response retransmission intervals), T4 = 5 s (how long a message may stay in
    the network). ``timer_d`` is at least 32 s for unreliable transports (§17.1.1.2).
    ``trying_delay`` is how long an INVITE server transaction waits for the TU before
    sending 100 Trying itself (§17.2.1: "200 ms"); None turns that off.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float | None = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_d < 0:
            raise ValueError("T4 must be positive and timer D not negative")

    @property
    def timer_b(self) -> float:  # INVITE client transaction timeout, §17.1.1.2
        return 64 * self.t1

    @property
    def timer_f(self) -> float:  # non-INVITE client transaction timeout, §17.1.2.2
        return 64 * self.t1

    @property
    def timer_h(self) -> float:  # wait for ACK, §17.2.1
        return 64 * self.t1

    @property
    def timer_j(self) -> float:  # non-INVITE server absorbs retransmissions, §17.2.2
        return 64 * self.t1

    @property
    def timer_l(self) -> float:  # Accepted state of the INVITE server tx, RFC 6026 §8.11
        return 64 * self.t1

    @property
    def timer_m(self) -> float:  # Accepted state of the INVITE client tx, RFC 6026 §8.11
        return 64 * self.t1

    @property
    def timer_i(self) -> float:  # Confirmed absorbs ACK retransmissions, §17.2.1
        return self.t4

    @property
    def timer_k(self) -> float:  # Completed absorbs response retransmissions, §17.1.2.2
        return self.t4
