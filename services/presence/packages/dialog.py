"""The dialog package (RFC 4235), presence_dialoginfo's job: busy lamp and SLA.

State comes from PUBLISHes of dialog-info documents and from the call events of the
bus (sipmesh.presence.calls turns them into one publication per call and side). A
NOTIFY carries every dialog of the presentity in one full document (state="full")
with the subscription's version counter (§4.1).
"""

from __future__ import annotations

from sipmesh.presence.packages.base import BadBody, ComposeInput, declarations_text, merge_inner
from sipmesh.presence.xmlsafe import BadXml, escape, local_name, namespace, parse_xml

DIALOG_NS = "urn:ietf:params:xml:ns:dialog-info"
DIALOG_TYPE = "application/dialog-info+xml"
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")


# RFC 4235 §4.1.2: the values of the state element's event attribute.
TERMINATION_EVENTS = (
    "cancelled",
    "rejected",
    "replaced",
    "local-bye",
    "remote-bye",
    "error",
    "timeout",
)


def termination_event(reason: str, status: int = 0, *, local: bool | None = None) -> str:
    """The RFC 4235 §4.1.2 ``event`` of a terminated dialog from the edge's end reason.

    ``reason`` is the first word of DialogEvent.reason (``bye``, ``cancel``,
    ``failure``, ``timeout``, ``media-timeout`` …; events.proto) or already one of
    the RFC values; ``status`` the INVITE's final status for a failure; ``local``
    whether the side the document describes sent the BYE (None: not known).
    A BYE is ``local-bye`` for the side that sent it and ``remote-bye`` for the
    other, ``remote-bye`` when it is not known who did. An empty or unknown reason
    gives "" (the attribute is optional).
    """
    word = reason.strip().lower()
    if word in TERMINATION_EVENTS:
        return word
    if word == "bye":
        return "local-bye" if local else "remote-bye"
    if word in ("cancel", "canceled"):
        return "cancelled"
    if word == "failure":
        if status == 487:
            return "cancelled"  # the caller's CANCEL (§4.1.2: before the 2xx)
        if status == 408:
            return "timeout"  # no final answer in time
        return "rejected"
    if word in ("media-timeout", "expired"):
        return "timeout"
    return ""


def dialog_document(
    entity: str,
    *,
    dialog_id: str,
    call_id: str,
    local_tag: str,
    remote_tag: str,
    direction: str,
    state: str,
    local_identity: str,
    remote_identity: str,
    event: str = "",
) -> bytes:
    """A dialog-info document with the one dialog of a call (RFC 4235 §4.1.6)."""
    attrs = f'id="{escape(dialog_id)}" call-id="{escape(call_id)}"'
    if local_tag:
        attrs += f' local-tag="{escape(local_tag)}"'
    if remote_tag:
        attrs += f' remote-tag="{escape(remote_tag)}"'
    attrs += f' direction="{direction}"'
    state_attr = f' event="{escape(event)}"' if event and state == "terminated" else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<dialog-info xmlns="{DIALOG_NS}" version="0" state="full" entity="{escape(entity)}">\n'
        f"  <dialog {attrs}>\n"
        f"    <state{state_attr}>{state}</state>\n"
        f"    <local><identity>{escape(local_identity)}</identity></local>\n"
        f"    <remote><identity>{escape(remote_identity)}</identity></remote>\n"
        "  </dialog>\n"
        "</dialog-info>\n"
    ).encode()


class DialogPackage:
    name = "dialog"
    content_type = DIALOG_TYPE
    publishable = True
    needs_watchers = False

    def validate(self, body: bytes, content_type: str) -> None:
        if content_type.split(";", 1)[0].strip().lower() != DIALOG_TYPE:
            raise BadBody(415, "Unsupported Media Type")
        try:
            root = parse_xml(body)
        except BadXml as exc:
            raise BadBody(400, f"Bad dialog-info: {exc}") from None
        if namespace(root.tag) != DIALOG_NS or local_name(root.tag) != "dialog-info":
            raise BadBody(400, "Bad dialog-info: root is not dialog-info")
        for attr in ("version", "state", "entity"):
            if root.get(attr) is None:
                raise BadBody(400, f"Bad dialog-info: no {attr} attribute")

    def compose(self, state: ComposeInput) -> bytes:
        head = (
            f'<dialog-info xmlns="{DIALOG_NS}" version="{state.version}" state="full" '
            f'entity="{escape(state.presentity_uri)}"'
        ).encode()
        merged = merge_inner([p.body for p in state.publications], "dialog-info")
        inner = b"\n"
        if merged is not None:
            merged.declarations.pop(b"", None)
            head += declarations_text(merged.declarations, head)
            inner = b"".join(merged.inners) or b"\n"
        doc = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n' + head + b">" + inner + b"</dialog-info>\n"
        )
        try:
            parse_xml(doc)
        except BadXml:
            doc = b'<?xml version="1.0" encoding="UTF-8"?>\n' + head + b">\n</dialog-info>\n"
        return doc
