"""Between the location store's Binding and the contracts' protobuf messages."""

from __future__ import annotations

import json

from sipmesh.gen.sipmesh.v1 import common_pb2
from sipmesh.registrar.core import SourceFacts
from sipmesh.state.location import Binding

_TRANSPORTS: dict[str, int] = {
    "udp": common_pb2.TRANSPORT_UDP,
    "tcp": common_pb2.TRANSPORT_TCP,
    "tls": common_pb2.TRANSPORT_TLS,
    "ws": common_pb2.TRANSPORT_WS,
    "wss": common_pb2.TRANSPORT_WSS,
    "sctp": common_pb2.TRANSPORT_SCTP,
}
_TRANSPORT_NAMES = {v: k for k, v in _TRANSPORTS.items()}


def transport_enum(name: str) -> common_pb2.Transport.ValueType:
    return common_pb2.Transport.ValueType(_TRANSPORTS.get(name.lower(), 0))


def transport_name(value: int) -> str:
    return _TRANSPORT_NAMES.get(value, "udp")


def _source_address(received: str | None, transport: str) -> common_pb2.Address | None:
    if not received:
        return None
    hostport = received.removeprefix("sip:").split(";", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return None
    return common_pb2.Address(
        transport=transport_enum(transport), host=host.strip("[]"), port=int(port)
    )


def binding_to_pb(b: Binding) -> common_pb2.Binding:
    msg = common_pb2.Binding(
        ruid=b.ruid,
        aor=b.aor,
        contact=b.contact,
        expires_at=b.expires_at,
        call_id=b.call_id,
        cseq=b.cseq,
        path=list(b.path),
        received=b.received or "",
        transport=transport_enum(b.transport),
        socket=b.socket or "",
        edge_id=b.edge_id or "",
        flow_id=b.flow_id or "",
        flow_token=str(b.attrs.get("flow_token", "")),
        instance=b.instance or "",
        reg_id=b.reg_id or 0,
        user_agent=b.user_agent,
        flags=b.flags,
        cflags=b.cflags,
        methods=b.methods or 0,
        last_modified=b.last_modified,
    )
    if b.q is not None:
        msg.q = b.q
    source = _source_address(b.received, b.transport)
    if source is not None:
        msg.source.CopyFrom(source)
    return msg


def binding_from_pb(msg: common_pb2.Binding) -> Binding:
    attrs: dict[str, object] = {}
    if msg.flow_token:
        attrs["flow_token"] = msg.flow_token
    return Binding(
        aor=msg.aor,
        contact=msg.contact,
        expires_at=msg.expires_at,
        q=msg.q if msg.HasField("q") else None,
        call_id=msg.call_id,
        cseq=msg.cseq,
        path=tuple(msg.path),
        received=msg.received or None,
        transport=transport_name(msg.transport),
        socket=msg.socket or None,
        edge_id=msg.edge_id or None,
        flow_id=msg.flow_id or None,
        instance=msg.instance or None,
        reg_id=msg.reg_id or None,
        user_agent=msg.user_agent,
        methods=msg.methods or None,
        flags=msg.flags,
        cflags=msg.cflags,
        last_modified=msg.last_modified,
        ruid=msg.ruid,
        attrs=attrs,
    )


def facts_from_pb(source: common_pb2.Source) -> SourceFacts:
    return SourceFacts(
        remote_host=source.remote.host,
        remote_port=source.remote.port,
        transport=transport_name(source.remote.transport),
        socket=source.socket,
        edge_id=source.edge_id,
        flow_id=source.flow_id,
        flow_token=source.flow_token,
        nat_detected=source.nat_detected,
    )


def binding_json(b: Binding, now: float) -> dict[str, object]:
    """A readable dict for ``sipmesh ctl ul show --json``."""
    data = b.to_dict()
    data["expires_in"] = max(0, int(b.expires_at - now))
    return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]
