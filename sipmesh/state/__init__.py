"""State backends: key/value, location, tables, event bus.

Interfaces (import these in services): ``KVStore``, ``LocationStore`` + ``Binding``,
``Database``, ``EventBus`` + ``Message``; errors ``StateUnavailable`` and friends.
Implementations are opened from URLs by ``sipmesh.state.factory``.
"""

from sipmesh.state.bus import EventBus, Handler, Message, Responder, Subscription
from sipmesh.state.clock import Clock, FakeClock, system_clock
from sipmesh.state.db import Database, Executor, Row
from sipmesh.state.errors import BadStateURL, StateConflict, StateError, StateUnavailable
from sipmesh.state.kv import KVBatch, KVStore, Pending
from sipmesh.state.location import Binding, LocationStore, UpdateFn, sort_bindings

__all__ = [
    "BadStateURL",
    "Binding",
    "Clock",
    "Database",
    "EventBus",
    "Executor",
    "FakeClock",
    "Handler",
    "KVBatch",
    "KVStore",
    "LocationStore",
    "Message",
    "Pending",
    "Responder",
    "Row",
    "StateConflict",
    "StateError",
    "StateUnavailable",
    "Subscription",
    "UpdateFn",
    "sort_bindings",
    "system_clock",
]
