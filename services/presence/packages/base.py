"""What an event package provides, and a textual merge of XML documents."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from sipmesh.presence.model import Publication


class BadBody(ValueError):
    """A PUBLISH body the package refuses: ``status`` is 400 or 415 (RFC 3903 §6)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class WatcherEntry:
    """One watcher of a presentity for RFC 3858 watcher information."""

    id: str
    uri: str
    status: str  # active, pending, terminated, waiting
    event: str  # subscribe, approved, deactivated, rejected, timeout ...
    package: str = "presence"


@dataclass(slots=True)
class ComposeInput:
    presentity_uri: str
    publications: list[Publication] = field(default_factory=list)
    watchers: list[WatcherEntry] = field(default_factory=list)
    # The subscription's NOTIFY version counter (RFC 3858 §4.4, RFC 4235 §4.1).
    version: int = 0


class Package(Protocol):
    name: str
    #: Content-Type of NOTIFY bodies.
    content_type: str
    #: May the state be published (PUBLISH, Deliver)?
    publishable: bool
    #: Is the state a list of watchers (winfo) rather than publications?
    needs_watchers: bool

    def validate(self, body: bytes, content_type: str) -> None:
        """Raise BadBody when a PUBLISH body cannot be accepted."""
        ...

    def compose(self, state: ComposeInput) -> bytes:
        """The body of a NOTIFY carrying the current state."""
        ...


_DECL_RE = re.compile(rb"""\sxmlns(?::([\w.\-]+))?\s*=\s*("[^"]*"|'[^']*')""")


@dataclass(slots=True)
class Merged:
    """Inner XML of several documents of one root element, with their namespaces."""

    first_start_tag: bytes
    declarations: dict[bytes, bytes]
    inners: list[bytes]


def merge_inner(bodies: list[bytes], root: str) -> Merged | None:
    """Cut each document into its root's start tag and its content, textually.

    Copying the content byte for byte keeps what each publisher wrote (prefixes,
    RPID and other extensions) where re-serialising with ElementTree would rename
    them. None when the documents cannot be combined that way (a prefix bound to two
    namespaces, an unexpected shape); callers then fall back to the newest document.
    """
    start_re = re.compile(rb"<(?:([\w.\-]+):)?" + re.escape(root.encode()) + rb"\b([^>]*?)(/?)>")
    declarations: dict[bytes, bytes] = {}
    inners: list[bytes] = []
    first = b""
    for body in bodies:
        match = start_re.search(body)
        if match is None:
            return None
        prefix = match.group(1)
        for decl_prefix, uri in _DECL_RE.findall(match.group(2)):
            bound = declarations.setdefault(decl_prefix, uri[1:-1])
            if bound != uri[1:-1]:
                return None
        if not first:
            first = match.group(0)
            if match.group(3):
                first = first[:-2].rstrip() + b">"
        if match.group(3):
            inners.append(b"")
            continue
        end_tag = b"</" + (prefix + b":" if prefix else b"") + root.encode()
        end = body.rfind(end_tag)
        if end < match.end():
            return None
        inners.append(body[match.end() : end])
    return Merged(first, declarations, inners)


def declarations_text(declarations: dict[bytes, bytes], skip: bytes) -> bytes:
    """xmlns attributes of ``declarations`` not already in the start tag ``skip``."""
    present = {p for p, _ in _DECL_RE.findall(skip)}
    out = b""
    for prefix, uri in declarations.items():
        if prefix in present:
            continue
        name = b"xmlns:" + prefix if prefix else b"xmlns"
        out += b" " + name + b'="' + uri + b'"'
    return out
