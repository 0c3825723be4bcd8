"""Errors raised by every state backend.

Callers catch these and never a driver's own exceptions: a service that talks to
Redis, PostgreSQL or NATS must behave the same whichever driver sits below.
"""

from __future__ import annotations


class StateError(Exception):
    """Base class of every error of sipmesh.state."""


class StateUnavailable(StateError):
    """The backend could not be reached (or did not answer) within the bounded timeout.

    Raised instead of hanging: the operation may be retried later; the client stays
    usable and reconnects on its own when the server comes back.
    """


class StateConflict(StateError):
    """An optimistic update could not be applied after its bounded number of retries."""


class BadStateURL(StateError, ValueError):
    """A state, db or bus URL that no backend understands (a configuration error)."""


class ConstraintViolation(StateError):
    """A write broke a unique/not-null/foreign-key constraint (e.g. a duplicate subscriber)."""
