"""Kamailio's dialog statistics and tmx's UAS/UAC transaction counts of the edge
(services/edge/dialogs.py DialogCounts, services/edge/stats.py), read the way a
Prometheus scrape reads them: through the edge's registry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from sipmesh.edge.dialogs import DialogEvents
from sipmesh.edge.service import EdgeService
from sipmesh.sip import parse_message

from .conftest import Peer, request_text, start_edge, udp_port
from .test_cancels import next_method
from .test_dialogs import in_dialog_router
from .test_media import answer, in_dialog

PeerFactory = Callable[[], Awaitable[Peer]]


def scrape(edge: EdgeService) -> dict[str, float]:
    registry = edge.stats.registry
    assert isinstance(registry, CollectorRegistry)
    names = (
        "active_dialogs",
        "early_dialogs",
        "processed_dialogs_total",
        "failed_dialogs_total",
        "expired_dialogs_total",
        "UAS_transactions_total",
        "UAC_transactions_total",
    )
    out: dict[str, float] = {}
    for name in names:
        value = registry.get_sample_value("sipmesh_" + name)
        assert value is not None, name
        out[name] = value
    return out


async def test_answered_call_counts_early_then_active_then_processed(
    udp_peers: PeerFactory,
) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(in_dialog_router(callee))
    try:
        port = udp_port(edge)
        assert scrape(edge)["UAS_transactions_total"] == 0
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="st-1"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 180), port)
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 180
        ringing = scrape(edge)
        assert (ringing["early_dialogs"], ringing["active_dialogs"]) == (1, 0)

        callee.send(answer(callee, invite, 200), port)
        ok = await caller.next_response()
        assert ok.status == 200
        talking = scrape(edge)
        assert (talking["early_dialogs"], talking["active_dialogs"]) == (0, 1)
        assert talking["processed_dialogs_total"] == 1

        caller.send(in_dialog("BYE", caller, ok, 2), port)
        bye = await callee.next_request()
        callee.send(answer(callee, bye, 200), port)
        assert (await caller.next_response()).status == 200
        done = scrape(edge)
        assert (done["active_dialogs"], done["early_dialogs"]) == (0, 0)
        assert done["processed_dialogs_total"] == 1
        assert done["failed_dialogs_total"] == 0
        # One server transaction per new request (INVITE, BYE); none sent by the
        # edge on its own (branches of a proxied request are not tmx's UAC).
        assert done["UAS_transactions_total"] == 2
        assert done["UAC_transactions_total"] == 0
    finally:
        await edge.stop(0)


async def test_busy_and_cancelled_calls_are_failed_dialogs(udp_peers: PeerFactory) -> None:
    caller, callee = await udp_peers(), await udp_peers()
    edge = await start_edge(in_dialog_router(callee))
    try:
        port = udp_port(edge)
        caller.send(
            request_text("INVITE", "sip:bob@sipmesh.test", caller.port, call_id="st-2"), port
        )
        invite = await callee.next_request()
        callee.send(answer(callee, invite, 486), port)
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 486
        busy = scrape(edge)
        assert busy["failed_dialogs_total"] == 1
        assert (busy["active_dialogs"], busy["processed_dialogs_total"]) == (0, 0)

        invite_text = request_text(
            "INVITE", "sip:bob@sipmesh.test", caller.port, call_id="st-3", branch="z9hG4bKst3"
        )
        caller.send(invite_text, port)
        invite = await callee.next_request()
        if invite.method == "ACK":  # of the 486 above
            invite = await callee.next_request()
        callee.send(answer(callee, invite, 180), port)
        assert (await caller.next_response()).status == 100
        assert (await caller.next_response()).status == 180
        assert scrape(edge)["early_dialogs"] == 1
        caller.send(
            request_text(
                "CANCEL", "sip:bob@sipmesh.test", caller.port, call_id="st-3", branch="z9hG4bKst3"
            ),
            port,
        )
        assert (await caller.next_response()).status == 200  # the CANCEL's
        cancel = await next_method(callee, "CANCEL")  # past INVITE retransmissions
        callee.send(answer(callee, cancel, 200), port)
        callee.send(answer(callee, invite, 487), port)  # relayed (RFC 3261 §16.10)
        assert (await caller.next_response()).status == 487
        cancelled = scrape(edge)
        assert (cancelled["early_dialogs"], cancelled["failed_dialogs_total"]) == (0, 2)
    finally:
        await edge.stop(0)


class _Ptx:
    """The part of a ProxyTransaction the dialog tracker reads."""

    def __init__(self, raw: str, tx_id: str) -> None:
        request = parse_message(raw.replace("\n", "\r\n").encode())
        self.request = request
        self.dialog = False
        self.tx_id = tx_id
        self.span = None
        self.cancelled = False
        self.branches = [object()]
        self.source_pb = type("S", (), {"remote": None})()


def _invite(call_id: str) -> str:
    return (
        "INVITE sip:bob@sipmesh.test SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\n"
        "From: <sip:alice@sipmesh.test>;tag=a1\nTo: <sip:bob@sipmesh.test>\n"
        f"Call-ID: {call_id}\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n"
    )


def test_answered_call_without_bye_expires_after_the_dialog_timeout() -> None:
    now = [1000.0]
    fired: list[str] = []
    dialogs = DialogEvents(
        lambda subject, envelope, span: fired.append(subject),
        timeout=600.0,
        clock=lambda: now[0],
    )
    ok = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@sipmesh.test>;tag=a1\r\nTo: <sip:bob@sipmesh.test>;tag=b1\r\n"
        b"Call-ID: old\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    old = _Ptx(_invite("old"), "t1")
    dialogs.started(old)  # type: ignore[arg-type]
    dialogs.final(old, ok)  # type: ignore[arg-type]
    assert (dialogs.counts.active, dialogs.counts.processed) == (1, 1)
    # Its BYE went through another edge: this one never sees the end. The next call
    # after the timeout sweeps it out as expired (Kamailio's default_timeout).
    now[0] += 601.0
    dialogs.started(_Ptx(_invite("new"), "t2"))  # type: ignore[arg-type]
    assert (dialogs.counts.active, dialogs.counts.expired) == (0, 1)
    assert len(dialogs) == 1
    assert fired == ["sipmesh.dialog.start", "sipmesh.dialog.answer", "sipmesh.dialog.start"]
