"""Presence requests that must fail, through `sipmesh serve` with sipp (issue 8):
malformed PIDF (400), unknown event packages (489 Bad Event with Allow-Events), an
unknown entity tag (412), Expires too brief (423 with Min-Expires) or not a number
(400), a body that is not PIDF (415 with Accept). RFC 3903 §6, RFC 6665 §4.1.3 and
§8.2.1, RFC 3261 §21.4.17 and §21.4.13."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.sipp import SippResult, run_sipp
from tests.e2e.test_presence_sipp import (
    DOMAIN,
    MIN_EXPIRES,
    USERS,
    Deployment,
    SipText,
    expect_scenario,
    inject,
    one_process,
    read_trace,
)

pytestmark = [pytest.mark.sipp, pytest.mark.e2e]

PIDF = "application/pidf+xml"
NOT_WELL_FORMED = (
    '<?xml version="1.0"?>\n'
    f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@{DOMAIN}">\n'
    '<tuple id="t1"><status><basic>open</basic></status>\n'
    "</presence>"
)
NOT_PIDF = '<?xml version="1.0"?>\n<note xmlns="urn:example:not-pidf">hello</note>'
GOOD_PIDF = (
    '<?xml version="1.0"?>\n'
    f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@{DOMAIN}">'
    '<tuple id="t1"><status><basic>open</basic></status></tuple></presence>'
)

# (id, method, headers, body, status, header the response must carry (name, value or ""))
CASES = [
    (
        "publish-not-well-formed",
        "PUBLISH",
        ["Event: presence", "Expires: 600", f"Content-Type: {PIDF}"],
        NOT_WELL_FORMED,
        400,
        None,
    ),
    (
        "publish-not-pidf",
        "PUBLISH",
        ["Event: presence", "Expires: 600", f"Content-Type: {PIDF}"],
        NOT_PIDF,
        400,
        None,
    ),
    (
        "publish-unknown-event",
        "PUBLISH",
        ["Event: no-such-package", "Expires: 600", f"Content-Type: {PIDF}"],
        GOOD_PIDF,
        489,
        ("Allow-Events", "presence"),
    ),
    (
        "subscribe-unknown-event",
        "SUBSCRIBE",
        ["Event: no-such-package", "Expires: 600"],
        "",
        489,
        ("Allow-Events", "presence"),
    ),
    (
        "publish-winfo-not-publishable",
        "PUBLISH",
        ["Event: presence.winfo", "Expires: 600", "Content-Type: application/watcherinfo+xml"],
        "<watcherinfo/>",
        489,
        ("Allow-Events", ""),
    ),
    (
        "publish-unknown-etag-refresh",
        "PUBLISH",
        ["Event: presence", "Expires: 600", "SIP-If-Match: no-such-etag"],
        "",
        412,
        None,
    ),
    (
        "publish-unknown-etag-modify",
        "PUBLISH",
        ["Event: presence", "Expires: 600", "SIP-If-Match: no-such-etag", f"Content-Type: {PIDF}"],
        GOOD_PIDF,
        412,
        None,
    ),
    (
        "publish-unknown-etag-remove",
        "PUBLISH",
        ["Event: presence", "Expires: 0", "SIP-If-Match: no-such-etag"],
        "",
        412,
        None,
    ),
    (
        "publish-expires-too-brief",
        "PUBLISH",
        ["Event: presence", "Expires: 2", f"Content-Type: {PIDF}"],
        GOOD_PIDF,
        423,
        ("Min-Expires", str(MIN_EXPIRES)),
    ),
    (
        "subscribe-expires-too-brief",
        "SUBSCRIBE",
        ["Event: presence", "Expires: 2"],
        "",
        423,
        ("Min-Expires", str(MIN_EXPIRES)),
    ),
    (
        "subscribe-expires-not-a-number",
        "SUBSCRIBE",
        ["Event: presence", "Expires: soon"],
        "",
        400,
        None,
    ),
    (
        "publish-expires-not-a-number",
        "PUBLISH",
        ["Event: presence", "Expires: later", f"Content-Type: {PIDF}"],
        GOOD_PIDF,
        400,
        None,
    ),
    (
        "publish-wrong-content-type",
        "PUBLISH",
        ["Event: presence", "Expires: 600", "Content-Type: text/plain"],
        "open",
        415,
        ("Accept", PIDF),
    ),
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # One process for every case: the sipp runs follow each other faster than the
    # anti-flood limit (16 requests in 2 s per source) allows, so loopback is trusted.
    made = one_process(
        tmp_path_factory.mktemp("presence-errors"), {"SIPMESH_EDGE__TRUSTED_SOURCES": "127.0.0.1"}
    )
    try:
        yield made
    finally:
        made.stop()


def final_response(trace: Path) -> SipText:
    responses = [m for m in read_trace(trace) if m.received and m.start.startswith("SIP/2.0")]
    finals = [m for m in responses if not m.start.startswith("SIP/2.0 1")]
    assert finals, responses
    return finals[-1]


@pytest.mark.parametrize(
    ("method", "headers", "body", "status", "must_carry"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_error_response(
    deployment: Deployment,
    tmp_path: Path,
    method: str,
    headers: list[str],
    body: str,
    status: int,
    must_carry: tuple[str, str] | None,
) -> None:
    trace = tmp_path / "messages.log"
    result = run_sipp(
        f"127.0.0.1:{deployment.sip.sip_port}",
        scenario=str(expect_scenario(tmp_path, method, headers, body, status)),
        workdir=tmp_path,
        inf=inject(tmp_path, "a.csv", f"alice;{DOMAIN};alice"),
        extra=["-au", "alice", "-ap", USERS["alice"], "-trace_msg", "-message_file", str(trace)],
        timeout=15,
    )
    assert isinstance(result, SippResult)
    final = final_response(trace)
    assert result.returncode == 0, final.start + "\n" + result.output + deployment.logs()
    assert final.start.startswith(f"SIP/2.0 {status} ")
    if must_carry is not None:
        name, value = must_carry
        assert final.get(name), final.headers
        assert value in final.get(name), final.headers
