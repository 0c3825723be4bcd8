"""Branch targets of a relay, and the "myself" check (Kamailio's ``uri==myself``)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.router.resolve import Hop

_TRANSPORTS = {
    "udp": common_pb2.TRANSPORT_UDP,
    "tcp": common_pb2.TRANSPORT_TCP,
    "tls": common_pb2.TRANSPORT_TLS,
    "ws": common_pb2.TRANSPORT_WS,
    "wss": common_pb2.TRANSPORT_WSS,
    "sctp": common_pb2.TRANSPORT_SCTP,
}
TRANSPORT_NAMES = {v: k for k, v in _TRANSPORTS.items()}


def transport_enum(name: str) -> common_pb2.Transport.ValueType:
    return _TRANSPORTS.get(name.lower(), common_pb2.TRANSPORT_UNSPECIFIED)


@dataclass
class Target:
    """One branch of a relay (Kamailio: $ru/$du/$bf of a branch, plus sipmesh's flow).

    ``uri`` is the branch's Request-URI; ``dst_uri`` overrides the next hop ($du);
    ``destination`` is a resolved next hop (SIPOUT); ``path`` is pushed as Route
    headers (RFC 3327 §5.3); ``edge_id``/``flow_id``/``flow_token`` send over the flow
    the callee registered through (RFC 5626 §5.3); ``group`` orders serial forking.
    """

    uri: str
    dst_uri: str = ""
    destination: Hop | None = None
    path: list[str] = field(default_factory=list)
    edge_id: str = ""
    flow_id: str = ""
    flow_token: str = ""
    socket: str = ""
    q: float | None = None
    group: int = 0
    branch_flags: int = 0
    instance: str = ""

    @classmethod
    def from_binding(cls, binding: common_pb2.Binding) -> Target:
        """A branch to a registered contact: received address as $du, Path, flow."""
        return cls(
            uri=binding.contact,
            dst_uri=binding.received,
            path=list(binding.path),
            edge_id=binding.edge_id,
            flow_id=binding.flow_id,
            flow_token=binding.flow_token,
            socket=binding.socket,
            q=binding.q if binding.HasField("q") else None,
            branch_flags=binding.cflags,
            instance=binding.instance,
        )

    def to_proto(self) -> router_pb2.Target:
        out = router_pb2.Target(
            uri=self.uri,
            dst_uri=self.dst_uri,
            path=self.path,
            edge_id=self.edge_id,
            flow_id=self.flow_id,
            flow_token=self.flow_token,
            socket=self.socket,
            group=self.group,
            branch_flags=self.branch_flags,
            instance=self.instance,
        )
        if self.q is not None:
            out.q = self.q
        if self.destination is not None:
            out.destination.CopyFrom(
                common_pb2.Address(
                    transport=transport_enum(self.destination.transport),
                    host=self.destination.host,
                    port=self.destination.port,
                )
            )
        return out

    @classmethod
    def from_proto(cls, target: router_pb2.Target) -> Target:
        hop = None
        if target.HasField("destination") and target.destination.host:
            d = target.destination
            hop = Hop(TRANSPORT_NAMES.get(d.transport, "udp"), d.host, d.port)
        return cls(
            uri=target.uri,
            dst_uri=target.dst_uri,
            destination=hop,
            path=list(target.path),
            edge_id=target.edge_id,
            flow_id=target.flow_id,
            flow_token=target.flow_token,
            socket=target.socket,
            q=target.q if target.HasField("q") else None,
            group=target.group,
            branch_flags=target.branch_flags,
            instance=target.instance,
        )


def serial_groups(targets: list[Target]) -> None:
    """t_load_contacts: one group per distinct q, highest q first (RFC 3261 §16.6)."""
    qs = sorted({1.0 if t.q is None else t.q for t in targets}, reverse=True)
    rank = {q: i for i, q in enumerate(qs)}
    for t in targets:
        t.group = rank[1.0 if t.q is None else t.q]


class Myself:
    """The names and addresses this proxy answers for (Kamailio's ``myself``).

    Local domains (``domains`` of the config, the ``domain`` table with
    WITH_MULTIDOMAIN), ``router.aliases``, and the listener and advertised addresses.
    An IP literal with a port is ours only on a port we listen on.
    """

    def __init__(self, names: Iterable[str], ports: Iterable[int] = ()) -> None:
        self._names = frozenset(_norm(n) for n in names if n)
        self._ports = frozenset(ports)

    def with_names(self, names: Iterable[str]) -> Myself:
        return Myself([*self._names, *names], self._ports)

    def host_is_mine(self, host: str, port: int | None = None, local_ip: str = "") -> bool:
        h = _norm(host)
        if h not in self._names and not (local_ip and h == _norm(local_ip)):
            return False
        if port is None or not self._ports or not _is_ip(h):
            return True
        return port in self._ports

    @property
    def names(self) -> frozenset[str]:
        return self._names


# Called for every myself check of every request; host names repeat: memoise the
# ipaddress round trip (~10 µs).
@functools.lru_cache(maxsize=4096)
def _norm(host: str) -> str:
    h = host.strip().strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        return h


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
