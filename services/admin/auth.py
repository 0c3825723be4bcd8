"""The gRPC admin API's token check: the guard `add_admin_servicer` runs before each call.

The same `Tokens` as the REST API (one generated write token serves both); which RPCs
only read is `sipmesh.clients.admin_auth.ADMIN_RPC_ACCESS`. An admitted call runs
with its caller named (``token:write`` and the peer address) for the audit events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from sipmesh.admin.base import Actor, acting
from sipmesh.clients.admin_auth import Tokens, bearer_token
from sipmesh.clients.errors import Unauthenticated


class TokenGuard:
    """Admits gRPC admin calls carrying a known token (`tokens` is set at start;
    until then every call is refused)."""

    def __init__(self, tokens: Tokens | None = None) -> None:
        self.tokens = tokens

    def admit(
        self, rpc: str, metadata: Sequence[tuple[str, str | bytes]], peer: str
    ) -> contextlib.AbstractContextManager[None]:
        if self.tokens is None:
            raise Unauthenticated("the admin service is not started yet")
        role = self.tokens.admit(rpc, bearer_token(metadata))
        return acting(Actor(f"token:{role}", _address(peer)))


def _address(peer: str) -> str:
    """gRPC's peer ``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` as ``host:port``."""
    for prefix in ("ipv4:", "ipv6:"):
        if peer.startswith(prefix):
            return peer[len(prefix) :]
    return peer
