"""RFC 4235 §4.1.2 termination events from the edge's end reasons
(services/presence/packages/dialog.py termination_event)."""

from __future__ import annotations

import pytest

from sipmesh.presence.packages.dialog import (
    TERMINATION_EVENTS,
    dialog_document,
    termination_event,
)


@pytest.mark.parametrize(
    ("reason", "status", "local", "expected"),
    [
        ("bye", 200, True, "local-bye"),
        ("bye", 200, False, "remote-bye"),
        ("bye", 200, None, "remote-bye"),  # not known who hung up
        ("cancel", 487, None, "cancelled"),
        ("failure", 486, None, "rejected"),
        ("failure", 603, None, "rejected"),
        ("failure", 487, None, "cancelled"),
        ("failure", 408, None, "timeout"),
        ("timeout", 0, None, "timeout"),
        ("media-timeout", 0, None, "timeout"),
        ("replaced", 0, None, "replaced"),
        ("error", 0, None, "error"),
        ("REJECTED", 0, None, "rejected"),  # already an RFC value
        ("", 0, None, ""),
        ("whatever", 0, None, ""),  # unknown: the optional attribute is left out
    ],
)
def test_end_reasons_map_to_rfc_4235_events(
    reason: str, status: int, local: bool | None, expected: str
) -> None:
    event = termination_event(reason, status, local=local)
    assert event == expected
    assert event == "" or event in TERMINATION_EVENTS


def test_the_document_carries_the_event_only_when_terminated() -> None:
    common = {
        "dialog_id": "d1",
        "call_id": "c1",
        "local_tag": "a",
        "remote_tag": "b",
        "direction": "initiator",
        "local_identity": "sip:alice@example.com",
        "remote_identity": "sip:bob@example.com",
    }
    ended = dialog_document("sip:alice@example.com", state="terminated", event="local-bye",
                            **common)  # fmt: skip
    assert b'<state event="local-bye">terminated</state>' in ended
    live = dialog_document("sip:alice@example.com", state="confirmed", event="local-bye", **common)
    assert b"<state>confirmed</state>" in live
