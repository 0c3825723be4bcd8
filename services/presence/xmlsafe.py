"""Parsing untrusted XML bodies (PIDF, dialog-info) safely.

xml.etree with expat >= 2.4.1 is not open to the "billion laughs" expansion, but a
presence document never needs a DTD at all, so any document type declaration or
entity declaration is refused outright (what defusedxml does by default), and the
size is capped. No extra dependency is needed for that.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

MAX_BODY = 64 * 1024


class BadXml(ValueError):
    """Not well-formed, too large, or using DTD features (answer 400)."""


def parse_xml(body: bytes) -> ET.Element:
    if len(body) > MAX_BODY:
        raise BadXml("document too large")
    head = body[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in body.lower():
        raise BadXml("document type declarations are not allowed")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise BadXml(f"not well-formed XML: {exc}") from None


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
