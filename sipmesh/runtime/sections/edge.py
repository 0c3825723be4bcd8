"""The edge: transports, request checks, anti-flood, NAT, transactions."""

from typing import Literal

from pydantic import Field

from sipmesh.runtime.sections.base import Section


class EdgeConfig(Section):
    advertise: str = Field(
        "", description="address put in Via/Record-Route (public IP behind NAT); empty: listener's"
    )
    max_message_size: int = Field(65535, ge=1024, description="largest SIP message accepted")
    router_timeout: float = Field(
        2.0, gt=0, description="seconds to wait for a routing decision before 500/503"
    )

    # --- transports (services/edge/transport) -------------------------------------
    # Names follow Kamailio's core parameters where one exists (tcp_connection_lifetime,
    # tcp_connect_timeout, tcp_max_connections, ...). See docs/edge.md.
    reuse_port: bool = Field(
        False, description="SO_REUSEPORT on listeners, so several edge processes share a port"
    )
    tcp_connection_lifetime: float = Field(
        120.0, gt=0, description="seconds an idle TCP/TLS/WS connection is kept open"
    )
    tcp_connect_timeout: float = Field(
        10.0, gt=0, description="seconds to wait for an outgoing TCP/TLS/WS connection"
    )
    tcp_read_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a connection may hold an incomplete message before it is closed",
    )
    tcp_max_connections: int = Field(
        2048, ge=1, description="cap on open TCP/TLS/WS connections, both directions"
    )
    tcp_max_connections_per_source: int = Field(
        64, ge=0, description="cap on accepted connections from one source IP (0: no cap)"
    )
    tls_certificate: str = Field("", description="PEM certificate (chain) of the TLS/WSS listeners")
    tls_private_key: str = Field("", description="PEM private key of tls_certificate")
    tls_ca_list: str = Field(
        "", description="PEM CA bundle to verify peers' certificates; empty: system CAs"
    )
    tls_verify_client: bool = Field(
        False, description="ask TLS/WSS clients for a certificate and verify it if sent"
    )
    tls_require_client_certificate: bool = Field(
        False, description="refuse TLS/WSS clients without a valid certificate"
    )
    tls_sni_certificates: list[str] = Field(
        [],
        description="extra server certificates by SNI name: NAME=CERTFILE:KEYFILE, comma-separated",
    )
    tls_verify_server: bool = Field(
        True, description="verify the certificate and name of servers sipmesh connects to"
    )
    tls_min_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        "TLSv1.2", description="oldest TLS version accepted: TLSv1.2 or TLSv1.3"
    )
    ws_origins: list[str] = Field(
        [], description="WebSocket Origin allow-list (e.g. https://example.com); empty: any"
    )
    # --- end of transports ---------------------------------------------------------

    # --- proxy core, REQINIT, anti-flood, NAT (services/edge core; see docs/edge.md) ---
    fr_timer: float = Field(
        30.0, gt=0, description="seconds a branch waits for any response (tm's fr_timer)"
    )
    fr_inv_timer: float = Field(
        120.0,
        gt=0,
        description="seconds an INVITE branch waits for a final response after a provisional "
        "(timer C, tm's fr_inv_timer)",
    )
    router_failure_code: int = Field(
        503, ge=500, le=599, description="status sent when the router is down or times out"
    )
    router_retry_after: int = Field(
        5, ge=0, description="Retry-After seconds sent with that status; 0: none"
    )
    max_forwards: int = Field(
        70, ge=1, le=255, description="Max-Forwards put on forwarded requests that carry none"
    )
    scanner_user_agents: list[str] = Field(
        [
            "friendly-scanner",
            "sipvicious",
            "sipcli",
            "vaxsipuseragent",
            "sip-scan",
            "iwar",
            "sundayddr",
            "pplsip",
        ],
        description="User-Agent substrings (case-insensitive) whose requests are dropped",
    )
    proxy_require_supported: list[str] = Field(
        [], description="option tags accepted in Proxy-Require; others get 420 Bad Extension"
    )
    antiflood: bool = Field(True, description="per-source rate limit and ban (pike + ipban)")
    pike_window: float = Field(2.0, gt=0, description="anti-flood sliding window, seconds")
    pike_limit: int = Field(16, ge=1, description="requests allowed per source per window")
    ban_time: float = Field(300.0, gt=0, description="seconds a flooding source stays banned")
    trusted_sources: list[str] = Field(
        [], description="IPs or CIDR networks exempt from the anti-flood check"
    )
    ban_sync_interval: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="seconds between syncs of flood counters and bans with the shared store",
    )
    nat_alias: bool = Field(
        True,
        description="add an alias parameter to the Contact of NATed requests (add_contact_alias)",
    )
    nat_keepalive: Literal["options", "crlf", "none"] = Field(
        "options", description="NAT keep-alive sent to NATed registered contacts"
    )
    nat_keepalive_interval: float = Field(30.0, gt=0, description="seconds between NAT keep-alives")
    # --- end of proxy core ----------------------------------------------------------
