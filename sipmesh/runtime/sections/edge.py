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
