"""TLS contexts for the tls and wss listeners and for outgoing TLS connections.

Server side: the default certificate from ``tls_certificate``/``tls_private_key``,
more picked by SNI name (RFC 6066 §3) from ``tls_sni_certificates``; client
certificates asked for and verified against ``tls_ca_list`` when configured
(mutual TLS between SIP servers, RFC 3261 §26.3.2.2 / RFC 5922). Client side:
the server's certificate and name verified unless ``tls_verify_server`` is off,
and our certificate offered when one is configured.
"""

from __future__ import annotations

import ssl

from sipmesh.edge.transport.base import TransportError
from sipmesh.runtime.sections.edge import EdgeConfig

__all__ = ["client_context", "parse_sni_entry", "server_context"]

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def parse_sni_entry(entry: str) -> tuple[str, str, str]:
    """``NAME=CERTFILE:KEYFILE`` (or ``NAME=CERTFILE`` with the key inside) → parts."""
    name, sep, files = entry.partition("=")
    if not sep or not name.strip() or not files.strip():
        raise TransportError(f"tls_sni_certificates: {entry!r} is not NAME=CERTFILE:KEYFILE")
    cert, _, key = files.partition(":")
    return name.strip().lower(), cert.strip(), key.strip()


def _server_base(config: EdgeConfig, cert: str, key: str, what: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[config.tls_min_version]
    try:
        ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"{what}: cannot load certificate {cert!r}: {exc}") from exc
    if config.tls_verify_client or config.tls_require_client_certificate:
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if config.tls_require_client_certificate else ssl.CERT_OPTIONAL
        )
        try:
            if config.tls_ca_list:
                ctx.load_verify_locations(cafile=config.tls_ca_list)
            else:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"{what}: cannot load tls_ca_list {config.tls_ca_list!r}: {exc}"
            ) from exc
    return ctx


def server_context(config: EdgeConfig, listener: str) -> ssl.SSLContext:
    """The context of a tls/wss listener; TransportError names what is missing."""
    if not config.tls_certificate:
        raise TransportError(f"{listener}: TLS listener without edge.tls_certificate")
    default = _server_base(config, config.tls_certificate, config.tls_private_key, listener)
    by_name: dict[str, ssl.SSLContext] = {}
    for entry in config.tls_sni_certificates:
        name, cert, key = parse_sni_entry(entry)
        by_name[name] = _server_base(config, cert, key, f"{listener} (SNI {name})")
    if by_name:

        def pick(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            # Unknown or absent names keep the default certificate.
            chosen = by_name.get((server_name or "").lower())
            if chosen is not None:
                sock.context = chosen

        default.sni_callback = pick
    return default


def client_context(config: EdgeConfig) -> ssl.SSLContext:
    """The context of outgoing TLS/WSS connections."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = _VERSIONS[config.tls_min_version]
    if config.tls_verify_server:
        try:
            if config.tls_ca_list:
                ctx.load_verify_locations(cafile=config.tls_ca_list)
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot load tls_ca_list {config.tls_ca_list!r}: {exc}") from exc
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if config.tls_certificate:
        try:
            ctx.load_cert_chain(config.tls_certificate, config.tls_private_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"cannot load tls_certificate for client use: {exc}") from exc
    return ctx
