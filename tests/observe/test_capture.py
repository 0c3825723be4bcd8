"""SIP capture: modes (all / flagged transaction / flagged dialog), HEP and sip_trace rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sipmesh.observe.capture import (
    CapturedFlow,
    CaptureSink,
    SipCapture,
    call_id_of,
    set_capture_mode,
)
from sipmesh.observe.hep import HepPacket, decode_hep3
from sipmesh.state.factory import open_db, open_kv
from sipmesh.state.schema import migrate

FLOW = CapturedFlow("udp", ("192.0.2.10", 5062), ("127.0.0.1", 5060))
TX_FLAG, DLG_FLAG = 22, 23


def msg(first: str, call_id: str, cseq: str, *, to_tag: str = "") -> bytes:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{first}\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1\r\n"
        f"From: <sip:alice@example.com>;tag=a1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class Collected:
    """A HepOut that keeps the packets (the HEP sender itself is tested on sockets)."""

    def __init__(self) -> None:
        self.packets: list[HepPacket] = []

    def send(self, packet: bytes) -> None:
        self.packets.append(decode_hep3(packet))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


async def test_mode_all_mirrors_both_directions_with_call_id_correlation() -> None:
    hep = Collected()
    capture = SipCapture(hep=hep, mode="all", capture_id=7, clock=lambda: 100.0)
    await capture.start()
    invite = msg("INVITE sip:bob@example.com SIP/2.0", "c1@x", "1 INVITE")
    capture.received(invite, FLOW, 99.5)
    capture.sent(msg("SIP/2.0 100 Trying", "c1@x", "1 INVITE"), FLOW)
    await capture.stop()
    first, second = hep.packets
    assert (first.src, first.dst, first.timestamp) == (FLOW.remote, FLOW.local, 99.5)
    assert (second.src, second.dst) == (FLOW.local, FLOW.remote)
    assert first.payload == invite
    assert first.correlation_id == b"c1@x"
    assert first.capture_id == 7
    assert second.timestamp == 100.0


async def test_flagged_transaction_captures_only_that_transaction() -> None:
    hep = Collected()
    capture = SipCapture(hep=hep, mode="flagged", transaction_flag=TX_FLAG)
    invite = msg("INVITE sip:bob@example.com SIP/2.0", "c2@x", "5 INVITE")
    capture.received(invite, FLOW, 1.0)
    assert hep.packets == []  # nothing flagged yet
    capture.on_flags(1 << TX_FLAG, invite, FLOW, 1.0)  # the router's decision
    capture.sent(msg("SIP/2.0 180 Ringing", "c2@x", "5 INVITE"), FLOW)
    capture.sent(msg("BYE sip:bob@example.com SIP/2.0", "c2@x", "6 BYE"), FLOW)  # next tx
    capture.received(msg("OPTIONS sip:x SIP/2.0", "other@x", "5 OPTIONS"), FLOW, 2.0)
    assert [p.payload.split(b"\r\n")[0] for p in hep.packets] == [
        b"INVITE sip:bob@example.com SIP/2.0",
        b"SIP/2.0 180 Ringing",
    ]
    capture.on_flags(1 << 3, invite, FLOW, 1.0)  # some other flag: no capture
    assert len(hep.packets) == 2


async def test_flagged_dialog_follows_the_call_id_until_the_bye_is_answered() -> None:
    now = [0.0]
    hep = Collected()
    capture = SipCapture(hep=hep, mode="flagged", dialog_flag=DLG_FLAG, clock=lambda: now[0])
    invite = msg("INVITE sip:bob@example.com SIP/2.0", "c3@x", "1 INVITE")
    capture.on_flags(1 << DLG_FLAG, invite, FLOW, 0.0)
    capture.received(msg("ACK sip:bob@example.com SIP/2.0", "c3@x", "1 ACK"), FLOW, 0.1)
    capture.received(msg("BYE sip:bob@example.com SIP/2.0", "c3@x", "2 BYE"), FLOW, 0.2)
    capture.sent(msg("SIP/2.0 200 OK", "c3@x", "2 BYE", to_tag="b1"), FLOW)
    assert len(hep.packets) == 4
    now[0] = 40.0  # past the tail kept for retransmissions after the BYE's answer
    capture.received(msg("BYE sip:bob@example.com SIP/2.0", "c3@x", "2 BYE"), FLOW, 40.0)
    assert len(hep.packets) == 4


async def test_mode_off_and_runtime_switch_through_the_kv_store() -> None:
    kv = open_kv("memory")
    hep = Collected()
    capture = SipCapture(hep=hep, kv=kv, mode="off")
    await capture.start()
    try:
        capture.received(msg("OPTIONS sip:x SIP/2.0", "c4@x", "1 OPTIONS"), FLOW, 0.0)
        assert hep.packets == []
        await set_capture_mode(kv, "all")
        async with asyncio.timeout(10):
            while capture.mode != "all":  # noqa: ASYNC110 - polled mode, bounded
                await asyncio.sleep(0.05)
        capture.received(msg("OPTIONS sip:x SIP/2.0", "c4@x", "1 OPTIONS"), FLOW, 0.0)
        assert len(hep.packets) == 1
    finally:
        await capture.stop()
        await kv.close()


async def test_sip_trace_rows_in_kamailio_columns(tmp_path: Path) -> None:
    db = await open_db(f"sqlite:///{tmp_path / 'trace.sqlite'}")
    await migrate(db)
    capture = SipCapture(db=db, mode="all")
    await capture.start()
    capture.received(msg("INVITE sip:bob@example.com SIP/2.0", "c5@x", "1 INVITE"), FLOW, 5.25)
    capture.sent(msg("SIP/2.0 486 Busy Here", "c5@x", "1 INVITE", to_tag="t9"), FLOW)
    await capture.stop()  # flushes the pending rows
    rows = await db.fetch(
        "SELECT callid, method, status, fromip, toip, fromtag, totag, direction, "
        "traced_user, time_us FROM sip_trace ORDER BY id"
    )
    await db.close()
    assert rows == [
        {
            "callid": "c5@x", "method": "INVITE", "status": "", "fromip": "udp:192.0.2.10:5062",
            "toip": "udp:127.0.0.1:5060", "fromtag": "a1", "totag": "", "direction": "in",
            "traced_user": "alice", "time_us": 250000,
        },
        {
            "callid": "c5@x", "method": "INVITE", "status": "486", "fromip": "udp:127.0.0.1:5060",
            "toip": "udp:192.0.2.10:5062", "fromtag": "a1", "totag": "t9", "direction": "out",
            "traced_user": "alice", "time_us": rows[1]["time_us"],
        },
    ]  # fmt: skip


def test_capture_sink_captures_then_hands_on() -> None:
    seen: list[bytes] = []

    class Core:
        def on_message(self, data: bytes, flow: object, received_at: float) -> None:
            seen.append(data)

        def on_flow_closed(self, flow: object) -> None:
            seen.append(b"closed")

    hep = Collected()
    sink = CaptureSink(Core(), SipCapture(hep=hep, mode="all"))
    data = msg("OPTIONS sip:x SIP/2.0", "c6@x", "1 OPTIONS")
    sink.on_message(data, FLOW, 1.0)
    sink.on_flow_closed(FLOW)
    assert seen == [data, b"closed"]
    assert hep.packets[0].payload == data


def test_call_id_compact_form() -> None:
    assert call_id_of(b"BYE sip:x SIP/2.0\r\ni: short@x\r\n\r\n") == b"short@x"
    assert call_id_of(b"BYE sip:x SIP/2.0\r\n\r\nCall-ID: body@x") == b""
