"""The admin API's access table and tokens (sipmesh/clients/admin_auth.py)."""

from __future__ import annotations

import pytest

from sipmesh.clients.admin_auth import (
    ADMIN_RPC_ACCESS,
    READ,
    WRITE,
    Tokens,
    bearer_metadata,
    bearer_token,
    rpc_name,
)
from sipmesh.clients.errors import PermissionDenied, Unauthenticated
from sipmesh.clients.grpc_servers import snake_case
from sipmesh.gen.sipmesh.v1 import admin_pb2

ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]


def test_every_admin_rpc_is_classified_read_or_write() -> None:
    rpcs = {rpc.name for rpc in ADMIN.methods}
    assert set(ADMIN_RPC_ACCESS) == rpcs
    assert set(ADMIN_RPC_ACCESS.values()) == {READ, WRITE}
    # What the names say: lists, shows and queries read; adds, removes, reloads write.
    for name, access in ADMIN_RPC_ACCESS.items():
        if name.endswith(("Add", "Remove", "Passwd", "Reload", "SetState", "Set")):
            assert access == WRITE, name
        if name.endswith(("List", "Show", "Get", "Query")):
            assert access == READ, name
    assert rpc_name("speed_dial_add") == "SpeedDialAdd"
    assert {rpc_name(snake_case(name)) for name in rpcs} == rpcs


def test_tokens_roles_and_admission() -> None:
    tokens = Tokens(write="w-token", read="r-token")
    assert tokens.role("w-token") == WRITE
    assert tokens.role("r-token") == READ
    assert tokens.role("w-toke") is None
    assert tokens.admit("SubscriberAdd", "w-token") == WRITE
    assert tokens.admit("SubscriberList", "r-token") == READ
    with pytest.raises(PermissionDenied, match="SubscriberAdd writes"):
        tokens.admit("SubscriberAdd", "r-token")
    with pytest.raises(PermissionDenied):
        tokens.admit("SomeFutureRpc", "r-token")  # unknown: a write (fail closed)
    for presented in ("", "nope", "w-token "):
        with pytest.raises(Unauthenticated):
            tokens.admit("Ping", presented)
    # No read token configured: an empty presented token matches nothing.
    with pytest.raises(Unauthenticated):
        Tokens(write="w").admit("Ping", "")


def test_bearer_token_from_metadata() -> None:
    assert bearer_token(bearer_metadata("abc")) == "abc"
    assert bearer_metadata("") == ()
    assert bearer_token([("traceparent", "00-x"), ("authorization", "bearer  xyz ")]) == "xyz"
    assert bearer_token([("authorization", "Basic dXNlcjpw")]) == ""
    assert bearer_token([("authorization", "abc")]) == ""
    assert bearer_token([("authorization-bin", b"Bearer abc")]) == ""
    assert bearer_token(None) == ""
