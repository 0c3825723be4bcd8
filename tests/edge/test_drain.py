"""Graceful drain of an edge (services/edge/drain.py): what is refused, what waits."""

from __future__ import annotations

import asyncio

from sipmesh.edge.drain import Drain
from sipmesh.sip import Request, Response, parse_message
from sipmesh.sip.transaction import Address, TransactionLayer


def request(
    method: str, call_id: str = "c1", to_tag: str = "", branch: str = "z9hG4bKa"
) -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    raw = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=f1\r\n"
        f"To: <sip:bob@example.com>{tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def response(req: Request, status: int) -> Response:
    raw = (
        f"SIP/2.0 {status} X\r\n"
        f"Via: {req.get('via')}\r\n"
        f"From: {req.get('from')}\r\nTo: {req.get('to')};tag=t9\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: {req.get('cseq')}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Response)
    return message


def test_nothing_is_refused_before_draining() -> None:
    drain, layer = Drain(), TransactionLayer()
    assert not drain.refuses(request("INVITE"), layer)


def test_draining_refuses_new_transactions_only() -> None:
    drain, layer = Drain(), TransactionLayer()
    drain.draining = True
    assert drain.refuses(request("INVITE"), layer)
    assert drain.refuses(request("REGISTER"), layer)
    # In-dialog requests, ACK and CANCEL belong to calls in progress.
    assert not drain.refuses(request("BYE", to_tag="t9"), layer)
    assert not drain.refuses(request("ACK"), layer)
    assert not drain.refuses(request("CANCEL"), layer)
    # A retransmission of a transaction already running here is not new work.
    invite = request("INVITE", branch="z9hG4bKrunning")
    layer.receive(invite, Address("UDP", "192.0.2.1", 5060, None), 0.0)
    assert not drain.refuses(request("INVITE", branch="z9hG4bKrunning"), layer)
    assert drain.refused == 2


def test_dialogs_start_on_invite_2xx_and_end_on_bye() -> None:
    drain = Drain()
    invite = request("INVITE", call_id="d1")
    drain.on_final(invite, response(invite, 486))
    assert drain.dialogs == 0
    drain.on_final(invite, response(invite, 200))
    assert drain.dialogs == 1
    bye = request("BYE", call_id="d1", to_tag="t9")
    drain.on_final(bye, response(bye, 200))
    assert drain.dialogs == 0


def test_dialog_table_is_bounded() -> None:
    drain = Drain(max_dialogs=3)
    for n in range(5):
        invite = request("INVITE", call_id=f"c{n}")
        drain.on_final(invite, response(invite, 200))
    assert drain.dialogs == 3


async def test_run_waits_for_transactions_and_dialogs() -> None:
    drain = Drain()
    invite = request("INVITE", call_id="d1")
    drain.on_final(invite, response(invite, 200))
    active = [1]
    task = asyncio.create_task(drain.run(lambda: active[0], grace=30))
    await asyncio.sleep(0.2)
    assert not task.done()
    assert drain.draining
    active[0] = 0
    await asyncio.sleep(0.2)
    assert not task.done()  # the dialog is still up
    bye = request("BYE", call_id="d1", to_tag="t9")
    drain.on_final(bye, response(bye, 200))
    left = await asyncio.wait_for(task, 5)
    assert 0 < left <= 30


async def test_run_gives_up_at_the_grace_period() -> None:
    drain = Drain()
    assert await asyncio.wait_for(drain.run(lambda: 1, grace=0.2), 5) == 0.0
