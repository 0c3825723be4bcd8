"""Errors of inter-service calls, the same in-process and over gRPC.

A service raises these (e.g. `InvalidArgument`) from its Protocol methods; the gRPC
adapters carry them as a per-item `CallError` on the batched streams or as the gRPC
status of a unary call, and the gRPC clients raise the same class again, so a
caller's `except Unavailable:` works whichever way the services are wired.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

from sipmesh.gen.sipmesh.v1 import common_pb2

_Code = common_pb2.CallError.Code


class ServiceError(Exception):
    """A call to another service failed; `code` says how (CallError.Code)."""

    code: ClassVar[common_pb2.CallError.Code.ValueType] = _Code.CODE_INTERNAL
    status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Seconds the caller should wait before retrying (maps to Retry-After).
        self.retry_after = retry_after


class Unavailable(ServiceError):
    """No instance can take the call now (stream broken, backend down, draining)."""

    code = _Code.CODE_UNAVAILABLE
    status = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError, TimeoutError):
    """The call's deadline passed before an answer came."""

    code = _Code.CODE_DEADLINE_EXCEEDED
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class InvalidArgument(ServiceError):
    code = _Code.CODE_INVALID_ARGUMENT
    status = grpc.StatusCode.INVALID_ARGUMENT


class Internal(ServiceError):
    code = _Code.CODE_INTERNAL
    status = grpc.StatusCode.INTERNAL


class ResourceExhausted(ServiceError):
    code = _Code.CODE_RESOURCE_EXHAUSTED
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(ServiceError):
    code = _Code.CODE_NOT_FOUND
    status = grpc.StatusCode.NOT_FOUND


class Cancelled(ServiceError):
    code = _Code.CODE_CANCELLED
    status = grpc.StatusCode.CANCELLED


class AlreadyExists(ServiceError):
    code = _Code.CODE_ALREADY_EXISTS
    status = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ServiceError):
    code = _Code.CODE_PERMISSION_DENIED
    status = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ServiceError):
    """No valid credentials came with the call (the admin API's bearer token)."""

    code = _Code.CODE_UNAUTHENTICATED
    status = grpc.StatusCode.UNAUTHENTICATED


_CLASSES: tuple[type[ServiceError], ...] = (
    Unavailable,
    DeadlineExceeded,
    InvalidArgument,
    Internal,
    ResourceExhausted,
    NotFound,
    Cancelled,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
)
_BY_CODE: dict[int, type[ServiceError]] = {cls.code: cls for cls in _CLASSES}
_BY_STATUS: dict[grpc.StatusCode, type[ServiceError]] = {cls.status: cls for cls in _CLASSES}


def error_to_proto(exc: BaseException) -> common_pb2.CallError:
    """The CallError for an exception raised by a service (unknown ones: INTERNAL)."""
    if isinstance(exc, ServiceError):
        retry_ms = int(exc.retry_after * 1000) if exc.retry_after is not None else 0
        return common_pb2.CallError(code=exc.code, message=exc.message, retry_after_ms=retry_ms)
    if isinstance(exc, TimeoutError):
        return common_pb2.CallError(code=_Code.CODE_DEADLINE_EXCEEDED, message="deadline exceeded")
    # Never leak internals beyond the exception's type and text.
    return common_pb2.CallError(code=_Code.CODE_INTERNAL, message=f"{type(exc).__name__}: {exc}")


def error_from_proto(error: common_pb2.CallError) -> ServiceError:
    cls = _BY_CODE.get(error.code, Internal)
    retry_after = error.retry_after_ms / 1000 if error.retry_after_ms else None
    return cls(error.message or cls.__name__, retry_after=retry_after)


def error_from_status(code: grpc.StatusCode, details: str | None) -> ServiceError:
    """The ServiceError for a failed unary call's gRPC status."""
    cls = _BY_STATUS.get(code, Internal)
    return cls(details or str(code))
