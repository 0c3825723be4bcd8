"""Service lifecycle: new → starting → running → stopping → terminated | failed."""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable


class ServiceState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    FAILED = "failed"


@runtime_checkable
class Service(Protocol):
    """What the module manager runs.

    ``start`` returns once the service can do its job (listeners bound, backends
    reached); ``stop`` drains within the grace period it is given and releases
    everything. ``ready`` is asked by /ready and the gRPC health service on every
    probe, so it must be cheap and tell the truth (e.g. False while a backend
    connection is lost).
    """

    async def start(self) -> None: ...

    async def stop(self, grace: float) -> None: ...

    def ready(self) -> bool: ...


class Lifecycle:
    """The state of one service, with the transitions the lifecycle allows."""

    _ALLOWED = {
        ServiceState.NEW: {ServiceState.STARTING, ServiceState.TERMINATED},
        ServiceState.STARTING: {ServiceState.RUNNING, ServiceState.FAILED, ServiceState.STOPPING},
        ServiceState.RUNNING: {ServiceState.STOPPING, ServiceState.FAILED},
        ServiceState.STOPPING: {ServiceState.TERMINATED, ServiceState.FAILED},
        ServiceState.TERMINATED: set(),
        ServiceState.FAILED: {ServiceState.STOPPING, ServiceState.TERMINATED},
    }

    def __init__(self) -> None:
        self.state = ServiceState.NEW
        self.error: BaseException | None = None

    def move(self, to: ServiceState, error: BaseException | None = None) -> None:
        if to not in self._ALLOWED[self.state]:
            raise RuntimeError(f"illegal lifecycle transition {self.state.value} → {to.value}")
        self.state = to
        if error is not None:
            self.error = error
