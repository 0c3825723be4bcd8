"""The presence package (RFC 3856) with PIDF bodies (RFC 3863), presence_xml's job.

PUBLISH bodies must be well-formed PIDF; RPID (RFC 4480) and other extensions are
kept as published. The state sent to watchers is the composition of every live
publication of the presentity, newest first (several devices of one user), or a
neutral "closed" document when nothing is published (RFC 3856 §6.6.2 leaves the
neutral state to the server; a closed basic status is what watchers expect).
"""

from __future__ import annotations

import hashlib
import re

from sipmesh.presence.packages.base import (
    BadBody,
    ComposeInput,
    declarations_text,
    merge_inner,
)
from sipmesh.presence.xmlsafe import BadXml, escape, local_name, namespace, parse_xml

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
PIDF_TYPE = "application/pidf+xml"


def neutral_document(presentity_uri: str) -> bytes:
    tuple_id = hashlib.blake2s(presentity_uri.encode(), digest_size=6).hexdigest()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="{PIDF_NS}" entity="{escape(presentity_uri)}">\n'
        f'  <tuple id="t{tuple_id}"><status><basic>closed</basic></status></tuple>\n'
        "</presence>\n"
    ).encode()


class PresencePackage:
    name = "presence"
    content_type = PIDF_TYPE
    publishable = True
    needs_watchers = False

    def validate(self, body: bytes, content_type: str) -> None:
        if content_type.split(";", 1)[0].strip().lower() != PIDF_TYPE:
            raise BadBody(415, "Unsupported Media Type")
        try:
            root = parse_xml(body)
        except BadXml as exc:
            raise BadBody(400, f"Bad PIDF: {exc}") from None
        # RFC 3863 §4.1: a <presence> element of the PIDF namespace with an entity.
        if namespace(root.tag) != PIDF_NS or local_name(root.tag) != "presence":
            raise BadBody(400, "Bad PIDF: root is not pidf:presence")
        if not root.get("entity"):
            raise BadBody(400, "Bad PIDF: presence without entity")
        for child in root:
            if namespace(child.tag) == PIDF_NS and local_name(child.tag) == "tuple":
                # §4.1.2: every tuple has an id and a status.
                if not child.get("id"):
                    raise BadBody(400, "Bad PIDF: tuple without id")
                if child.find(f"{{{PIDF_NS}}}status") is None:
                    raise BadBody(400, "Bad PIDF: tuple without status")

    def compose(self, state: ComposeInput) -> bytes:
        bodies = [p.body for p in state.publications]
        if not bodies:
            return neutral_document(state.presentity_uri)
        if len(bodies) == 1:
            return bodies[0]
        merged = merge_inner(bodies, "presence")
        if merged is None:
            return bodies[0]
        start = merged.first_start_tag
        extra = declarations_text(merged.declarations, start)
        head = start[:-1] + extra + b">"
        doc = b'<?xml version="1.0" encoding="UTF-8"?>\n' + head + b"".join(merged.inners)
        name = re.match(rb"<([\w.:\-]+)", start)
        if name is None:
            return bodies[0]
        doc += b"</" + name.group(1) + b">\n"
        try:
            parse_xml(doc)
        except BadXml:
            return bodies[0]
        return doc
