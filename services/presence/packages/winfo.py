"""presence.winfo (RFC 3857) with watcherinfo bodies (RFC 3858).

A presentity subscribes to its own watcher list; every NOTIFY carries the full list
(state="full") with the subscription's version counter, which RFC 3858 §4.4 requires
to increase by one per NOTIFY of the subscription.
"""

from __future__ import annotations

from sipmesh.presence.packages.base import BadBody, ComposeInput
from sipmesh.presence.xmlsafe import escape

WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
WINFO_TYPE = "application/watcherinfo+xml"


class WatcherInfoPackage:
    name = "presence.winfo"
    content_type = WINFO_TYPE
    publishable = False
    needs_watchers = True

    def validate(self, body: bytes, content_type: str) -> None:
        raise BadBody(400, "presence.winfo state cannot be published")

    def compose(self, state: ComposeInput) -> bytes:
        lines = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<watcherinfo xmlns="{WINFO_NS}" version="{state.version}" state="full">',
            f'  <watcher-list resource="{escape(state.presentity_uri)}" package="presence">',
        ]
        for w in state.watchers:
            lines.append(
                f'    <watcher id="{escape(w.id)}" event="{escape(w.event)}" '
                f'status="{escape(w.status)}">{escape(w.uri)}</watcher>'
            )
        lines += ["  </watcher-list>", "</watcherinfo>", ""]
        return "\n".join(lines).encode()
