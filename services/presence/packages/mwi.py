"""message-summary (RFC 3842), presence_mwi's job: message waiting indication.

The state is what a voicemail server published (PUBLISH, an unsolicited NOTIFY, or
the admin API through Deliver); the newest publication wins. Without any, watchers
get "Messages-Waiting: no".
"""

from __future__ import annotations

import re

from sipmesh.presence.packages.base import BadBody, ComposeInput

MWI_TYPE = "application/simple-message-summary"
_WAITING_RE = re.compile(rb"^\s*messages-waiting\s*:\s*(yes|no)\s*$", re.I | re.M)


class MessageSummaryPackage:
    name = "message-summary"
    content_type = MWI_TYPE
    publishable = True
    needs_watchers = False

    def validate(self, body: bytes, content_type: str) -> None:
        if content_type.split(";", 1)[0].strip().lower() != MWI_TYPE:
            raise BadBody(415, "Unsupported Media Type")
        # RFC 3842 §5.2: the body starts with the mandatory Messages-Waiting status.
        if _WAITING_RE.search(body) is None:
            raise BadBody(400, "Bad message-summary: no Messages-Waiting line")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadBody(400, "Bad message-summary: not UTF-8") from None

    def compose(self, state: ComposeInput) -> bytes:
        if state.publications:
            return state.publications[0].body
        return b"Messages-Waiting: no\r\n"
