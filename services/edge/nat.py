"""NAT traversal at the edge: what Kamailio's nathelper does in the default config.

- RFC 3581 received/rport on every request is sipmesh.sip.stateless.apply_received;
  responses then go back to the real source (symmetric response routing, §4).
- nat_uac_test 19 (NATDETECT route): bit 1, the Contact holds a private (RFC 1918) or
  shared (RFC 6598) address other than the source; bit 2, the top Via's host is not
  the source address; bit 16, the top Via's port is not the source port.
- fix_nated_register: the edge does not rewrite the REGISTER; it hands the source
  (transport, address, port, flow) to the router beside the message, and the registrar
  stores it as the binding's ``received`` (usrloc's received column).
- add_contact_alias / handle_ruri_alias: for other NATed requests (and replies) the
  Contact URI gets ``;alias=ip~port~proto`` so that in-dialog requests coming back
  name the real transport address; on the way back the alias is removed from the
  R-URI and becomes the next hop.
- Keep-alives: OPTIONS or CRLF sent to NATed registered contacts, only by the edge
  that received the REGISTER (it owns the flow and the NAT binding), never by all.
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from dataclasses import dataclass, field

from sipmesh.sip import ParseError, Request, Response, SipURI
from sipmesh.sip.fields import Contact

__all__ = [
    "KeepAliveTable",
    "KeepAliveTarget",
    "NatTest",
    "add_contact_alias",
    "is_private",
    "keepalive_options",
    "nat_uac_test",
    "pop_ruri_alias",
]

# Kamailio's protocol numbers in the alias parameter (ip~port~proto).
_PROTO_NUM = {"UDP": "1", "TCP": "2", "TLS": "3", "SCTP": "4", "WS": "5", "WSS": "6"}
_NUM_PROTO = {v: k for k, v in _PROTO_NUM.items()}

_PRIVATE_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",  # RFC 1918
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
        "fc00::/7",  # RFC 4193 unique local IPv6
    )
)


class NatTest:
    """nat_uac_test flag bits (the default config tests 19 = 1 | 2 | 16)."""

    CONTACT_PRIVATE = 1
    VIA_ADDRESS = 2
    VIA_PORT = 16
    DEFAULT = CONTACT_PRIVATE | VIA_ADDRESS | VIA_PORT


# Pure functions of the host strings, called for every request (nat_uac_test):
# ipaddress parsing costs ~10 µs a call; a UA's addresses repeat, so memoise.
@functools.lru_cache(maxsize=4096)
def is_private(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(addr in net for net in _PRIVATE_NETS if net.version == addr.version)


@functools.lru_cache(maxsize=4096)
def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a.strip("[]").lower() == b.strip("[]").lower()


def nat_uac_test(
    message: Request | Response,
    src_ip: str,
    src_port: int,
    tests: int = NatTest.DEFAULT,
) -> int:
    """The bits of ``tests`` that indicate a NAT between the sender and us (0: none)."""
    hit = 0
    via = message.top_via if isinstance(message, Request) else None
    if via is not None:
        if tests & NatTest.VIA_ADDRESS and not _same_ip(via.host, src_ip):
            hit |= NatTest.VIA_ADDRESS
        if tests & NatTest.VIA_PORT and (via.port or 5060) != src_port:
            # RFC 3261 §18.2.1: the sent-by port defaults to 5060; a different source
            # port means a NAT (or a TCP client's ephemeral port) rewrote it.
            hit |= NatTest.VIA_PORT
    if tests & NatTest.CONTACT_PRIVATE:
        try:
            contacts = message.contacts
        except ParseError:
            contacts = []
        for contact in contacts:
            uri = contact.uri
            if isinstance(uri, SipURI) and is_private(uri.host) and not _same_ip(uri.host, src_ip):
                hit |= NatTest.CONTACT_PRIVATE
                break
    return hit


def add_contact_alias(
    message: Request | Response, src_ip: str, src_port: int, transport: str
) -> bool:
    """Kamailio's add_contact_alias: ``;alias=ip~port~proto`` on the first Contact URI.

    Only when the Contact does not already name the source (then there is nothing to
    fix). Returns True when the message changed.
    """
    try:
        contacts = message.contacts
    except ParseError:
        return False
    if len(contacts) != 1 or contacts[0].is_star:
        return False
    contact = contacts[0]
    uri = contact.uri
    if not isinstance(uri, SipURI) or "alias" in uri.params:
        return False
    if _same_ip(uri.host, src_ip) and (uri.port or 5060) == src_port:
        return False
    fixed = uri.copy()
    host = src_ip.strip("[]")
    fixed.params["alias"] = f"{host}~{src_port}~{_PROTO_NUM.get(transport.upper(), '1')}"
    new = Contact(fixed, contact.display_name, contact.params)
    message.set("Contact", str(new))
    return True


def pop_ruri_alias(request: Request) -> tuple[str, str, int] | None:
    """Kamailio's handle_ruri_alias: remove ``alias`` from the R-URI, return the hop.

    Returns (transport, host, port) of the NATed peer, or None without a usable alias.
    """
    try:
        ruri = request.ruri
    except ParseError:
        return None
    if not isinstance(ruri, SipURI):
        return None
    value = ruri.params.get("alias")
    if not value:
        return None
    parts = value.split("~")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    host, port, proto = parts
    transport = _NUM_PROTO.get(proto, "UDP")
    fixed = ruri.copy()
    del fixed.params["alias"]
    request.uri = str(fixed)
    return transport, host, int(port)


def keepalive_options(uri: str, via_host: str, via_port: int, transport: str) -> bytes:
    """An OPTIONS keep-alive (nathelper's sipping) to a NATed contact.

    Sent statelessly: its answer carries only our Via, matches no transaction and is
    absorbed by the edge (RFC 3261 §16.7 step 1 / §18.1.2: nothing to forward it to).
    """
    branch = "z9hG4bKka" + secrets.token_hex(8)
    tag = secrets.token_hex(6)
    host = f"[{via_host}]" if ":" in via_host else via_host
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {host}:{via_port};branch={branch};rport",
        f"From: <sip:pinger@{host}>;tag={tag}",
        f"To: <{uri}>",
        f"Call-ID: {secrets.token_hex(10)}@{host}",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 1",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


@dataclass(slots=True)
class KeepAliveTarget:
    """A NATed contact registered through this edge."""

    uri: str
    transport: str
    host: str
    port: int
    flow_id: str | None
    expires_at: float
    next_at: float


@dataclass
class KeepAliveTable:
    """Contacts this edge keeps NAT bindings open for, keyed by their source address.

    Filled when a REGISTER from a NATed source is answered 2xx by this edge; an
    edge only ever learns of the registrations it received itself, which is what
    makes the keep-alive owned by one instance.
    """

    interval: float
    targets: dict[tuple[str, str, int], KeepAliveTarget] = field(default_factory=dict)

    def register(
        self,
        uri: str,
        transport: str,
        host: str,
        port: int,
        flow_id: str | None,
        expires: float,
        now: float,
    ) -> None:
        key = (transport.upper(), host, port)
        if expires <= 0:
            self.targets.pop(key, None)
            return
        current = self.targets.get(key)
        next_at = current.next_at if current is not None else now + self.interval
        self.targets[key] = KeepAliveTarget(
            uri, transport.upper(), host, port, flow_id, now + expires, next_at
        )

    def forget_flow(self, flow_id: str) -> int:
        gone = [k for k, t in self.targets.items() if t.flow_id == flow_id]
        for key in gone:
            del self.targets[key]
        return len(gone)

    def due(self, now: float) -> list[KeepAliveTarget]:
        """Targets to ping now; expired ones are removed, the rest rescheduled."""
        out: list[KeepAliveTarget] = []
        for key in list(self.targets):
            target = self.targets[key]
            if target.expires_at <= now:
                del self.targets[key]
            elif target.next_at <= now:
                target.next_at = now + self.interval
                out.append(target)
        return out
