"""Who may call the admin API (sipmesh.v1.Admin): bearer tokens and one access table.

The REST API and the gRPC admin API take the same two tokens (``admin_api.write_token``
and ``admin_api.read_token``, docs/admin.md). Over gRPC the token travels in the
call's metadata as ``authorization: Bearer <token>`` (the HTTP header, RFC 6750
§2.1, lower-cased as gRPC metadata keys are). A call without a known token is
UNAUTHENTICATED; the read token on a write RPC is PERMISSION_DENIED.

`ADMIN_RPC_ACCESS` says, for every RPC of admin.proto, whether it only reads or
changes something (tests/clients/test_admin_auth.py checks it names each RPC). The
REST routes derive their own read/write split from it.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sipmesh.clients.errors import PermissionDenied, Unauthenticated

Access = Literal["read", "write"]
READ: Access = "read"
WRITE: Access = "write"

AUTHORIZATION = "authorization"
_SCHEME = "bearer"

# Reloads, state changes and cfg set count as writes: they change what the cluster does.
ADMIN_RPC_ACCESS: Mapping[str, Access] = {
    "SubscriberAdd": WRITE,
    "SubscriberPasswd": WRITE,
    "SubscriberRemove": WRITE,
    "SubscriberShow": READ,
    "SubscriberList": READ,
    "LocationShow": READ,
    "LocationRemove": WRITE,
    "LocationAdd": WRITE,
    "AliasAdd": WRITE,
    "AliasRemove": WRITE,
    "AliasList": READ,
    "SpeedDialAdd": WRITE,
    "SpeedDialRemove": WRITE,
    "SpeedDialList": READ,
    "DomainAdd": WRITE,
    "DomainRemove": WRITE,
    "DomainList": READ,
    "AddressAdd": WRITE,
    "AddressRemove": WRITE,
    "AddressList": READ,
    "DispatcherList": READ,
    "DispatcherAdd": WRITE,
    "DispatcherRemove": WRITE,
    "DispatcherSetState": WRITE,
    "DispatcherReload": WRITE,
    "LcrList": READ,
    "LcrGatewayAdd": WRITE,
    "LcrGatewayRemove": WRITE,
    "LcrRuleAdd": WRITE,
    "LcrRuleRemove": WRITE,
    "LcrRuleTargetAdd": WRITE,
    "LcrRuleTargetRemove": WRITE,
    "LcrReload": WRITE,
    "DialplanAdd": WRITE,
    "DialplanRemove": WRITE,
    "DialplanList": READ,
    "DialplanTranslate": READ,
    "DialplanReload": WRITE,
    "BanList": READ,
    "BanAdd": WRITE,
    "BanRemove": WRITE,
    "CfgGet": READ,
    "CfgSet": WRITE,
    "Stats": READ,
    "AccQuery": READ,
    "CdrQuery": READ,
    "Reload": WRITE,
    "Versions": READ,
    "Instances": READ,
    "Ping": READ,
}


def rpc_name(method: str) -> str:
    """`speed_dial_add` (an AdminApi method) -> `SpeedDialAdd` (its RPC)."""
    return "".join(part.title() for part in method.split("_"))


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens; an empty read token means reads need the write token."""

    write: str
    read: str = ""

    def role(self, presented: str) -> Access | None:
        """ "write", "read" or None; compared in constant time."""
        given = presented.encode()
        if self.write and hmac.compare_digest(given, self.write.encode()):
            return WRITE
        if self.read and hmac.compare_digest(given, self.read.encode()):
            return READ
        return None

    def admit(self, rpc: str, presented: str) -> Access:
        """The caller's role for `rpc`, or Unauthenticated / PermissionDenied.

        An RPC missing from the table is treated as a write (fail closed)."""
        role = self.role(presented) if presented else None
        if role is None:
            raise Unauthenticated("a valid admin token is required (authorization: Bearer …)")
        if role != WRITE and ADMIN_RPC_ACCESS.get(rpc, WRITE) == WRITE:
            raise PermissionDenied(f"this token may only read; {rpc} writes")
        return role


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an ``authorization: Bearer <token>`` metadata entry, or ""."""
    for key, value in metadata or ():
        if key != AUTHORIZATION or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == _SCHEME:
            return token.strip()
    return ""


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata carrying `token` (none for an empty one)."""
    return ((AUTHORIZATION, f"Bearer {token}"),) if token else ()
