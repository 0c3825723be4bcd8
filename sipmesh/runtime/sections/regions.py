"""Configuration of the two-region (multi-region) setup: ``regions.*``.

A region is a complete installation (edges, routers, registrars, Redis, PostgreSQL,
NATS). With ``replicate`` on, the registrars of a region announce their registrations
to the peer regions over a NATS subject shared by all regions (carried by a NATS
leaf-node or gateway connection), and keep an index of the peers' registrations in
their own Redis; the router relays a request for a user it does not know locally to
the user's home region (docs/deployment.md, "Multi-region").
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from sipmesh.runtime.sections.base import Section

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class RegionsConfig(Section):
    name: str = Field("", description="this region's name; empty: one region, nothing replicated")
    replicate: bool = Field(
        False, description="announce registrations to peer regions and index theirs"
    )
    address: str = Field(
        "",
        description="SIP URI (or host:port) of this region's edges as the peer regions reach "
        "them; what a peer relays calls for users homed here to",
    )
    peers: list[str] = Field(
        [], description="region names whose registrations are indexed here; empty: every other"
    )
    subject: str = Field(
        "sipmesh-regions",
        description="NATS subject prefix shared by all regions (outside every namespace)",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not _NAME_RE.match(value):
            raise ValueError(f"{value!r}: a region name is letters, digits, '-' and '_'")
        return value

    @field_validator("peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _NAME_RE.match(name):
                raise ValueError(f"{name!r}: a region name is letters, digits, '-' and '_'")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not _SUBJECT_RE.match(value):
            raise ValueError(f"{value!r} is not a NATS subject prefix (tokens joined by '.')")
        return value

    def sip_address(self) -> str:
        """``address`` as a SIP URI (``host:port`` gets ``sip:`` in front)."""
        value = self.address.strip()
        if not value or value.startswith(("sip:", "sips:")):
            return value
        return "sip:" + value
