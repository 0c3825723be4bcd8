"""Pydantic models of the admin API's protobuf messages, for the REST layer.

The REST API takes the same fields as the gRPC messages (proto/sipmesh/v1/
admin.proto), so the models are derived from the message descriptors rather than
written twice: every field optional (proto3 defaults), integers bounded by their
proto type, enums by their value names. FastAPI turns them into the OpenAPI
document that schemathesis tests against.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from pydantic import BaseModel, ConfigDict, Field, create_model

_INT_BOUNDS: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _scalar(field: FieldDescriptor) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one non-repeated scalar field."""
    kind = field.type
    if kind in _INT_BOUNDS:
        low, high = _INT_BOUNDS[kind]
        return int, Field(None, ge=low, le=high)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return float, Field(None, allow_inf_nan=False, ge=-1e15, le=1e15)
    if kind == FieldDescriptor.TYPE_BOOL:
        return bool, Field(None)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        names = tuple(v.name for v in field.enum_type.values)
        return Literal[names], Field(None)
    return str, Field(None, max_length=4096)


def model_of(
    descriptor: Descriptor, *, exclude: frozenset[str] = frozenset(), name: str = ""
) -> type[BaseModel]:
    """A model with the fields of ``descriptor`` (minus ``exclude``), all optional."""
    fields: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name in exclude:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            fields[field.name] = (Optional[dict[str, str]], Field(None))  # noqa: UP045
            continue
        if field.message_type is not None:
            continue  # no nested messages in admin requests
        annotation, info = _scalar(field)
        if field.is_repeated:
            fields[field.name] = (Optional[list[annotation]], Field(None, max_length=100))  # type: ignore[valid-type]  # noqa: UP045
        else:
            fields[field.name] = (Optional[annotation], info)  # noqa: UP045
    return create_model(name or descriptor.name, __base__=_Strict, **fields)
