"""Addresses of record: how a URI becomes the key of the location store.

Kamailio's ``use_domain``: with it on, an AOR is ``user@domain`` (one sipmesh serves
several domains); with it off, the user part alone, whatever the domain. User parts
are case-sensitive (RFC 3261 §19.1.4), host parts are not, so domains are
lower-cased. A leading ``sip:``/``sips:`` and URI parameters are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipmesh.sip.errors import ParseError
from sipmesh.sip.uri import SipURI, TelURI, normalize_host, parse_uri


class AorError(ValueError):
    """The text is not an address a registrar can bind (400 / 404 by the caller)."""


@dataclass(frozen=True, slots=True)
class Aor:
    user: str
    domain: str

    def key(self, use_domain: bool) -> str:
        """The location store key (Kamailio's usrloc AOR)."""
        return f"{self.user}@{self.domain}" if use_domain else self.user

    def __str__(self) -> str:
        return f"{self.user}@{self.domain}"


def aor_from_uri(uri: SipURI | TelURI | object) -> Aor:
    """The AOR of a To/R-URI: its user and host (RFC 3261 §10.3 step 5)."""
    if not isinstance(uri, SipURI):
        raise AorError(f"not a SIP URI: {uri}")
    if not uri.user:
        raise AorError(f"URI without user part: {uri}")
    return Aor(uri.user, normalize_host(uri.host))


def parse_aor(text: str, default_domain: str = "") -> Aor:
    """``sip:alice@example.com``, ``alice@example.com`` or ``alice`` (with a default)."""
    raw = text.strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    if not raw.lower().startswith(("sip:", "sips:")):
        if "@" not in raw:
            if not default_domain:
                raise AorError(f"{text!r} has no domain")
            raw = f"{raw}@{default_domain}"
        raw = "sip:" + raw
    try:
        return aor_from_uri(parse_uri(raw))
    except ParseError as exc:
        raise AorError(f"bad address {text!r}: {exc}") from None


def split_key(key: str) -> tuple[str, str]:
    """(username, domain) of a store key; domain "" without use_domain."""
    user, _, domain = key.rpartition("@")
    if not user:
        return key, ""
    return user, domain
