"""Errors keep their class across the wire (sipmesh/clients/errors.py)."""

from __future__ import annotations

import pytest

from sipmesh.clients import errors


@pytest.mark.parametrize(
    "cls",
    [
        errors.Unavailable,
        errors.DeadlineExceeded,
        errors.InvalidArgument,
        errors.Internal,
        errors.ResourceExhausted,
        errors.NotFound,
        errors.Cancelled,
        errors.AlreadyExists,
        errors.PermissionDenied,
        errors.Unauthenticated,
    ],
)
def test_round_trip_through_call_error_and_status(cls: type[errors.ServiceError]) -> None:
    original = cls("why it failed", retry_after=1.5)
    again = errors.error_from_proto(errors.error_to_proto(original))
    assert type(again) is cls
    assert again.message == "why it failed"
    assert again.retry_after == 1.5
    by_status = errors.error_from_status(cls.status, "details")
    assert type(by_status) is cls
    assert by_status.message == "details"


def test_unknown_exceptions_become_internal_and_timeouts_deadlines() -> None:
    internal = errors.error_from_proto(errors.error_to_proto(KeyError("k")))
    assert type(internal) is errors.Internal
    assert "KeyError" in internal.message
    deadline = errors.error_from_proto(errors.error_to_proto(TimeoutError()))
    assert isinstance(deadline, errors.DeadlineExceeded)
    assert isinstance(deadline, TimeoutError)
