"""SDP offer/answer rewriting for a relay anchored in the media path.

What rtpengine does to the SDP it anchors (its ng flags keep their names here):

- every ``c=`` points at the relay's advertised address, every ``m=`` port at the
  relay port the *receiver* of this SDP must send to, and ``a=rtcp`` (RFC 3605)
  at the paired RTCP port (or the RTP port under rtcp-mux, RFC 5761 §5.1.3);
- ICE lines (RFC 8445 §15) are removed by default: candidates would name the
  endpoint, bypassing the relay (``ICE=keep`` leaves them, for endpoints that do
  ICE end to end through other means);
- direction attributes (RFC 8866 §6.7) and everything else are left as they are;
- ``trust-address``: the endpoint's media address is the SDP's ``c=``; without it
  the address is the one the signalling came from (``received-from``), which is
  right for endpoints behind NAT that write their private address;
- ``replace-origin``: ``o=`` gets the relay address too (topology hiding);
- ``media-address=X`` overrides the advertised address; ``address-family=IP6``
  (or IP4) picks the family of the relay side this SDP is sent to, which is how
  an IPv4 caller reaches an IPv6 callee through the relay.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sipmesh.sip.sdp import SdpError, SessionDescription, parse_sdp

__all__ = [
    "Flags",
    "LocalPorts",
    "MediaEndpoint",
    "SdpError",
    "endpoints",
    "parse_flags",
    "parse_offer",
    "rewrite",
]


@dataclass(slots=True)
class Flags:
    trust_address: bool = False
    symmetric: bool = True  # latch on the first packets (symmetric RTP, RFC 4961)
    replace_origin: bool = False
    ice: str = "remove"  # "remove" | "keep"
    address_family: str | None = None  # "IP4" | "IP6": family of the side the SDP goes to
    media_address: str | None = None
    strict_source: bool = False
    warnings: list[str] = field(default_factory=list)


_FAMILIES = {"IP4": "IP4", "IP6": "IP6", "IPV4": "IP4", "IPV6": "IP6"}


def parse_flags(flags: Iterable[str], *, ice_default: str = "remove") -> Flags:
    """rtpengine flag strings (``symmetric``, ``ICE=remove``, ``media-address=1.2.3.4`` …).

    Unknown flags are not an error (rtpengine ignores them too) but are reported in
    ``warnings`` so the caller sees what had no effect.
    """
    out = Flags(ice=ice_default)
    for raw in flags:
        flag = raw.strip()
        if not flag:
            continue
        name, sep, value = flag.partition("=")
        key = name.strip().lower().replace("_", "-").replace(" ", "-")
        value = value.strip()
        if key == "trust-address":
            out.trust_address = True
        elif key == "symmetric":
            out.symmetric = True
        elif key == "asymmetric":
            out.symmetric = False
        elif key == "replace-origin" or (key == "replace" and value.lower() == "origin"):
            out.replace_origin = True
        elif key in ("replace-session-connection", "replace-session-name"):
            pass  # every c= is replaced anyway
        elif key == "replace" and sep:
            pass  # replace=session-connection and friends: done anyway
        elif key == "strict-source":
            out.strict_source = True
        elif key == "ice" and sep:
            v = value.lower()
            if v in ("remove", "keep"):
                out.ice = v
            else:
                out.warnings.append(f"ICE={value} is not supported; ICE lines removed")
                out.ice = "remove"
        elif key in ("address-family", "address-family-ipv6") and sep:
            family = _FAMILIES.get(value.upper())
            if family is None:
                raise SdpError(f"address-family must be IP4 or IP6, got {value!r}")
            out.address_family = family
        elif key == "media-address" and sep:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise SdpError(f"media-address is not an IP address: {value!r}") from None
            out.media_address = value
        elif key in ("rtp/avp", "rtp/savp", "direction", "loop-protect", "port-latching"):
            pass  # accepted for compatibility; see docs/media-relay.md
        else:
            out.warnings.append(f"flag {flag!r} ignored")
    return out


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """Where one party wants to receive one media stream, as its SDP says."""

    index: int
    media: str
    port: int  # 0: stream rejected/disabled (RFC 3264 §6)
    address: str
    rtcp_port: int
    rtcp_address: str
    rtcp_mux: bool
    direction: str

    @property
    def family(self) -> str:
        return "IP6" if ":" in self.address else "IP4"


@dataclass(frozen=True, slots=True)
class LocalPorts:
    """The relay's ports a party must send one stream to."""

    address: str
    rtp_port: int
    rtcp_port: int


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SdpError(f"{what} is not an IP address: {text!r}") from None


def parse_offer(body: bytes) -> SessionDescription:
    """Parse and check what the relay needs: at least one m= line."""
    sd = parse_sdp(body)
    if not sd.media:
        raise SdpError("SDP has no m= line")
    return sd


def endpoints(sd: SessionDescription, source_ip: str | None, flags: Flags) -> list[MediaEndpoint]:
    """The receive addresses of every m= section of ``sd``.

    Without trust-address the signalling source replaces the SDP address (what NAT
    traversal needs), except for the hold address 0.0.0.0 (RFC 3264 §8.4) which is
    kept so the relay does not send to a party that asked not to receive.
    """
    out: list[MediaEndpoint] = []
    for i, m in enumerate(sd.media):
        conn = sd.media_connection(m)
        if conn is None:
            if m.port == 0:
                address = "0.0.0.0"
            else:
                raise SdpError(f"m= line {i + 1} ({m.media}) has no c= connection address")
        else:
            address = _ip(conn.address, f"c= address of m= line {i + 1}")
        held = address in ("0.0.0.0", "::")
        if not flags.trust_address and source_ip and not held:
            address = _ip(source_ip, "signalling source")
        mux = m.rtcp_mux
        rtcp = m.rtcp
        if rtcp is not None:
            rtcp_port = rtcp.port
            rtcp_address = address
            if rtcp.address is not None and (flags.trust_address or not source_ip):
                rtcp_address = _ip(rtcp.address, f"a=rtcp address of m= line {i + 1}")
        else:
            rtcp_port = m.port if mux else m.port + 1
            rtcp_address = address
        out.append(
            MediaEndpoint(
                index=i,
                media=m.media,
                port=m.port,
                address=address,
                rtcp_port=rtcp_port,
                rtcp_address=rtcp_address,
                rtcp_mux=mux,
                direction=sd.effective_direction(m),
            )
        )
    return out


def rewrite(
    sd: SessionDescription,
    local: Sequence[LocalPorts | None],
    flags: Flags,
) -> bytes:
    """Point ``sd`` at the relay: ``local[i]`` are the ports for m= line i (None: port 0)."""
    if len(local) != len(sd.media):
        raise ValueError("one LocalPorts per m= line")
    address = next((p.address for p in local if p is not None), None)
    if address is not None:
        sd.set_all_connections(address)
        if flags.replace_origin:
            sd.set_origin_address(address)
    for m, ports in zip(sd.media, local, strict=True):
        if ports is None:
            m.set_port(0)
            continue
        if m.connection is not None and m.connection.address != ports.address:
            m.set_connection(ports.address)
        m.set_port(ports.rtp_port)
        # RFC 5761 §5.1.3: with rtcp-mux, a=rtcp names the RTP port.
        m.set_rtcp(ports.rtp_port if m.rtcp_mux else ports.rtcp_port)
    if flags.ice == "remove":
        sd.remove_ice()
    return bytes(sd)
