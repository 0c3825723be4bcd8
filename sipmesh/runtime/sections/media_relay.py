"""The media relay (rtpengine/rtpproxy's job; docs/media-relay.md maps the settings)."""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class MediaRelayConfig(Section):
    port_min: int = Field(30000, ge=1024, le=65535, description="first RTP port")
    port_max: int = Field(40000, ge=1024, le=65535, description="last RTP port")
    bind_ipv4: str = Field(
        "0.0.0.0", description="IPv4 address the RTP ports are bound on; empty: no IPv4"
    )
    bind_ipv6: str = Field(
        "", description="IPv6 address the RTP ports are bound on; empty: no IPv6"
    )
    advertise_ipv4: str = Field(
        "",
        description="IPv4 address written into SDP (the public address behind NAT); empty: "
        "the bind address, or the host's primary address when bound to 0.0.0.0",
    )
    advertise_ipv6: str = Field("", description="IPv6 address written into SDP; empty: as for IPv4")
    max_sessions: int = Field(10000, ge=0, description="calls relayed at once; 0 = unlimited")
    media_timeout: float = Field(
        60.0,
        ge=0,
        description="seconds without media or signalling after which a call is deleted and "
        "sipmesh.media.timeout published; 0 = never",
    )
    strictness: Literal["open", "latch", "strict"] = Field(
        "latch",
        description="open: media goes to the latest source; latch: learn the first source, "
        "re-latch on a NAT port change or after relatch_after of silence; strict: only the "
        "latched source until the next offer/answer",
    )
    relatch_after: float = Field(
        2.0, ge=0, description="seconds of silence after which another source may take over"
    )
    ice: Literal["remove", "keep"] = Field(
        "remove", description="ICE lines in relayed SDP, unless the request's ICE= flag says"
    )
    ng_listen: str = Field(
        "127.0.0.1:22222",
        description="host:port of the rtpengine ng control socket (UDP, no authentication: "
        "keep it on a private address); empty: off",
    )
    relay_id: str = Field("", description="name in pings and events; empty: the instance id")
