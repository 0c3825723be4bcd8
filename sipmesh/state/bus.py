"""Event bus: the interface (in-process memory bus, NATS with JetStream).

Subjects are dot-separated tokens with NATS wildcards (``*`` one token, ``>`` the
rest). Each bus instance has a subject prefix (tests, tenants): callers use and see
subjects without it. Events on the hot path are ``publish`` only — fire and forget,
never request/reply (DESIGN.md, Performance). ``consume`` is durable consumption
(JetStream): a handler that returns acknowledges the message, one that raises
negatively acknowledges it so it is delivered again; a message not acknowledged
before the consumer stops (or crashes) is delivered again to the next consumer
with the same durable name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. ``subject`` is without the bus prefix."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: For durable consumption: how many times this message has been delivered (1 = first).
    delivery_count: int = 1
    #: For durable consumption: the message's sequence number in its stream.
    stream_seq: int | None = None


Handler = Callable[[Message], Awaitable[None]]
Responder = Callable[[Message], Awaitable[bytes]]


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop receiving. For a durable consumer, in-flight messages are not acked."""
        ...


@runtime_checkable
class EventBus(Protocol):
    """Async event bus. Raises ``StateUnavailable`` when the server is unreachable."""

    @property
    def prefix(self) -> str: ...

    @property
    def healthy(self) -> bool: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Fire and forget. Messages on a subject captured by a stream are stored."""
        ...

    async def subscribe(
        self, subject: str, handler: Handler, queue: str | None = None
    ) -> Subscription:
        """Receive messages on ``subject`` (wildcards allowed). Subscribers with the same
        ``queue`` share the messages: each goes to one of them."""
        ...

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> Message:
        """Send and wait for one reply; ``StateUnavailable`` when none comes in time."""
        ...

    async def respond(
        self, subject: str, responder: Responder, queue: str | None = None
    ) -> Subscription:
        """Answer requests on ``subject`` with what ``responder`` returns."""
        ...

    async def ensure_stream(self, stream: str, subjects: Sequence[str]) -> None:
        """Create the durable stream, or update its subjects; idempotent."""
        ...

    async def delete_stream(self, stream: str) -> bool:
        """Delete the stream and its consumers; True when it existed."""
        ...

    async def consume(
        self,
        stream: str,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        batch: int = 64,
    ) -> Subscription:
        """Durably consume ``subjects`` (created with the stream when missing).

        Consumers with the same ``durable`` name share the work. A message whose
        handler raised, or that stayed unacknowledged for ``ack_wait`` seconds, is
        delivered again (up to ``max_deliver`` times; -1 = unlimited).
        """
        ...


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    if "*" not in pattern:
        # The common shapes, without splitting: every published event is matched
        # against every subscription and stream of the in-process bus.
        if ">" not in pattern:
            return pattern == subject
        if pattern.endswith(".>") and ">" not in pattern[:-1]:
            stem = pattern[:-1]  # "a.b." matches "a.b.c…", not "a.b" nor "a.bc"
            return len(subject) > len(stem) and subject.startswith(stem)
    p_tokens = pattern.split(".")
    s_tokens = subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return i == len(p_tokens) - 1 and len(s_tokens) > i
        if i >= len(s_tokens):
            return False
        if token != "*" and token != s_tokens[i]:
            return False
    return len(p_tokens) == len(s_tokens)


def stream_name(prefix: str, stream: str) -> str:
    """The server-side name of ``stream`` for a bus with ``prefix`` (JetStream-safe)."""
    full = f"{prefix}_{stream}" if prefix else stream
    return "".join("_" if ch in ". *>/\\\t" else ch for ch in full)
