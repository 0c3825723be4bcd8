"""Per-transaction router state carried in the Decision ``context`` blob.

The router keeps no memory of transactions: what a later call for the same
transaction needs (the script version that started it, flags, script variables,
the armed handlers, the authenticated user) travels to the edge in
``Decision.context`` and comes back in ``RouteRequest.context``. Any router instance
can therefore serve the failure route of a transaction another instance started.

The encoding is compact JSON; a blob that cannot be decoded (another version of
sipmesh, corruption) yields an empty state rather than an error, so a transaction
always finishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Values a script may keep in ``ctx.vars``: what survives a JSON round trip.
VarValue = str | int | float | bool | None

_FORMAT = 1


@dataclass
class TxState:
    version: str = ""
    flags: int = 0
    vars: dict[str, VarValue] = field(default_factory=dict)
    failure: str = ""
    reply: str = ""
    branch: str = ""
    auth_user: str = ""
    # record_route() of the route that relayed: Kamailio adds Record-Route to the
    # request itself, so branches a failure route adds later carry it too (RFC 3261
    # §16.6 step 4: the proxy stays on the path whichever branch answers).
    record_route: bool = False
    record_route_params: str = ""

    def encode(self) -> bytes:
        data: dict[str, Any] = {"f": _FORMAT, "v": self.version}
        if self.flags:
            data["fl"] = self.flags
        if self.vars:
            data["va"] = self.vars
        handlers = [self.failure, self.reply, self.branch]
        if any(handlers):
            data["h"] = handlers
        if self.auth_user:
            data["au"] = self.auth_user
        if self.record_route:
            data["rr"] = self.record_route_params
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, blob: bytes) -> TxState:
        if not blob:
            return cls()
        try:
            data = json.loads(blob)
            if not isinstance(data, dict) or data.get("f") != _FORMAT:
                return cls()
            handlers = data.get("h") or ["", "", ""]
            raw_vars = data.get("va") or {}
            return cls(
                version=str(data.get("v", "")),
                flags=int(data.get("fl", 0)),
                vars={str(k): v for k, v in raw_vars.items() if _is_var(v)},
                failure=str(handlers[0]),
                reply=str(handlers[1]),
                branch=str(handlers[2]),
                auth_user=str(data.get("au", "")),
                record_route="rr" in data,
                record_route_params=str(data.get("rr") or ""),
            )
        except (ValueError, TypeError, IndexError, AttributeError):
            return cls()


def _is_var(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
