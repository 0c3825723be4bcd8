"""Event packages served by the presence service (RFC 6665 §7.2).

Each package says which body it accepts in PUBLISH (validation per package, RFC 3903
§6 step 4) and how the state sent in NOTIFY is composed from what is stored.
"""

from __future__ import annotations

from sipmesh.presence.packages.base import BadBody, ComposeInput, Package, WatcherEntry
from sipmesh.presence.packages.dialog import DialogPackage
from sipmesh.presence.packages.mwi import MessageSummaryPackage
from sipmesh.presence.packages.pidf import PresencePackage
from sipmesh.presence.packages.winfo import WatcherInfoPackage

__all__ = [
    "BadBody",
    "ComposeInput",
    "DialogPackage",
    "MessageSummaryPackage",
    "Package",
    "PresencePackage",
    "WatcherEntry",
    "WatcherInfoPackage",
    "default_packages",
]


def default_packages() -> dict[str, Package]:
    """The packages of Kamailio's presence_xml, presence_dialoginfo and presence_mwi."""
    packages: list[Package] = [
        PresencePackage(),
        WatcherInfoPackage(),
        DialogPackage(),
        MessageSummaryPackage(),
    ]
    return {p.name: p for p in packages}
