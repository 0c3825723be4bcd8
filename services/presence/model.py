"""The records of the presence service: subscriptions (active_watchers rows) and
publications (presentity rows), as plain data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# Kamailio's subscription status values (presence module, subscribe.h).
ACTIVE = 1
PENDING = 2
TERMINATED = 3

STATUS_NAMES = {ACTIVE: "active", PENDING: "pending", TERMINATED: "terminated"}


@dataclass(slots=True)
class Flow:
    """Where NOTIFYs for a watcher go: the edge that owns the watcher's flow (RFC 5626
    §5.3) and the far end as that edge saw it. Empty ``edge_id``: any edge."""

    edge_id: str = ""
    flow_id: str = ""
    flow_token: str = ""
    transport: int = 0  # common_pb2.Transport
    host: str = ""
    port: int = 0

    def as_dict(self) -> dict[str, str | int]:
        return {
            "edge_id": self.edge_id,
            "flow_id": self.flow_id,
            "flow_token": self.flow_token,
            "transport": self.transport,
            "host": self.host,
            "port": self.port,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Flow:
        return cls(
            edge_id=str(data.get("edge_id", "")),
            flow_id=str(data.get("flow_id", "")),
            flow_token=str(data.get("flow_token", "")),
            transport=int(str(data.get("transport", 0))),
            host=str(data.get("host", "")),
            port=int(str(data.get("port", 0))),
        )


@dataclass(slots=True)
class Subscription:
    """One subscription dialog in which we are the notifier (RFC 6665 §4.2).

    ``to_tag`` is our tag, ``from_tag`` the subscriber's; ``contact`` is the remote
    target and ``route_set`` the Record-Route of the SUBSCRIBE in order (RFC 3261
    §12.1.1, UAS side).
    """

    presentity_uri: str
    event: str
    event_id: str
    watcher_user: str
    watcher_domain: str
    to_user: str
    to_domain: str
    from_user: str
    from_domain: str
    callid: str
    to_tag: str
    from_tag: str
    local_cseq: int
    remote_cseq: int
    contact: str
    route_set: list[str]
    expires: int
    status: int
    reason: str
    version: int
    socket_info: str
    local_contact: str
    user_agent: str
    # What the To and From headers of our NOTIFYs carry (the SUBSCRIBE's To and From).
    from_header: str = ""
    to_header: str = ""
    flow: Flow = field(default_factory=Flow)

    @property
    def key(self) -> str:
        """A short stable id of the dialog (KV keys, logs)."""
        material = "\x00".join((self.callid, self.to_tag, self.from_tag))
        return hashlib.blake2s(
            material.encode("utf-8", "surrogateescape"), digest_size=12
        ).hexdigest()

    @property
    def watcher_uri(self) -> str:
        return (
            f"sip:{self.watcher_user}@{self.watcher_domain}"
            if self.watcher_user
            else (f"sip:{self.watcher_domain}")
        )


@dataclass(slots=True, frozen=True)
class Publication:
    """One presentity row: the state one publisher published (RFC 3903 §4)."""

    username: str
    domain: str
    event: str
    etag: str
    expires: int
    received_time: int
    body: bytes
    sender: str
    content_type: str = ""


def split_uri(uri: str) -> tuple[str, str]:
    """(user, host) of ``sip:user@host;params`` (no port), tolerant of odd input."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    user, _, host = rest.rpartition("@")
    host = host.split("]", 1)[0] + "]" if host.startswith("[") else host.split(":", 1)[0]
    return user, host.lower()


def presentity_uri(user: str, domain: str) -> str:
    return f"sip:{user}@{domain}" if user else f"sip:{domain}"
