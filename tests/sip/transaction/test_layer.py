"""TransactionLayer matching (§17.1.3, §17.2.3 incl. RFC 2543), CANCEL/ACK, and two
endpoints joined by a fake (lossy) link."""

from __future__ import annotations

from collections.abc import Callable

from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.stateless import make_cancel, make_response
from sipmesh.sip.transaction import (
    AckReceived,
    Address,
    CancelReceived,
    Event,
    MalformedMessage,
    RequestReceived,
    ResponseReceived,
    State,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransportFailure,
    response_address,
    server_key,
)

A = Address("UDP", "192.0.2.1", 5060)
B = Address("UDP", "192.0.2.2", 5060)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKlayer1",
    sent_by: str = "192.0.2.1:5060",
    to_tag: str | None = None,
    cseq_method: str | None = None,
    via_params: str = "",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@example.com",
        [
            ("Via", f"SIP/2.0/UDP {sent_by}{branch_param}{via_params}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@example.com>;tag=ft1"),
            ("To", to),
            ("Call-ID", "call-1@example.com"),
            ("CSeq", f"7 {cseq_method or method}"),
            ("Content-Length", "0"),
        ],
    )


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    layer.receive(request(), A, 0.0)
    layer.receive(request(sent_by="192.0.2.9:5060"), A, 0.0)  # same branch, other sent-by
    layer.receive(request("OPTIONS"), A, 0.0)  # same branch, other method
    layer.receive(request(), A, 0.1)  # retransmission
    evs = events(layer)
    assert [type(e) for e in evs] == [RequestReceived] * 3
    assert len({e.tx_id for e in evs if isinstance(e, RequestReceived)}) == 3
    assert layer.transaction_count == 3


def test_cancel_is_its_own_transaction_and_names_its_invite() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, A, 0.0)
    [inv_ev] = events(layer)
    assert isinstance(inv_ev, RequestReceived)
    cancel = make_cancel(invite)
    layer.receive(cancel, A, 1.0)
    [ev] = events(layer)
    assert isinstance(ev, CancelReceived)
    assert ev.invite_tx_id == inv_ev.tx_id
    assert ev.cancel_tx_id != inv_ev.tx_id
    assert ev.request.method == "CANCEL"
    # the TU answers both: 200 to the CANCEL, 487 to the INVITE
    layer.send_response(ev.cancel_tx_id, make_response(cancel, 200), 1.0)
    layer.send_response(inv_ev.tx_id, make_response(invite, 487, to_tag="x"), 1.0)
    assert layer.state(ev.cancel_tx_id) is State.COMPLETED
    assert layer.state(inv_ev.tx_id) is State.COMPLETED
    # a CANCEL retransmission gets the 200 again, not a new event
    layer.datagrams_to_send()
    layer.receive(make_cancel(invite), A, 1.2)
    [(data, _)] = layer.datagrams_to_send()
    resp = parse_message(data)
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.cseq.method == "CANCEL"
    assert events(layer) == []
    # a CANCEL for an unknown INVITE
    layer.receive(make_cancel(request(branch="z9hG4bKother")), A, 2.0)
    [orphan] = events(layer)
    assert isinstance(orphan, CancelReceived)
    assert orphan.invite_tx_id is None


def test_ack_for_2xx_with_new_branch_goes_to_tu_unmatched() -> None:
    layer = TransactionLayer()
    invite = request()
    layer.receive(invite, A, 0.0)
    [ev] = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(ev.tx_id, make_response(invite, 200, to_tag="t"), 0.1)
    ack = request("ACK", branch="z9hG4bKnewack", to_tag="t", cseq_method="ACK")
    layer.receive(ack, A, 0.2)
    assert events(layer) == [AckReceived(None, ack, A)]
    assert layer.state(ev.tx_id) is State.ACCEPTED


def test_rfc2543_fallback_matching_without_magic_cookie() -> None:
    layer = TransactionLayer()
    old = request(branch=None)
    layer.receive(old, A, 0.0)
    [ev] = events(layer)
    assert isinstance(ev, RequestReceived)
    assert ev.tx_id.startswith("s2543|")
    layer.receive(request(branch=None), A, 0.1)  # retransmission matched
    assert events(layer) == []
    layer.send_response(ev.tx_id, make_response(old, 486, to_tag="srv"), 0.2)
    layer.datagrams_to_send()
    # an ACK whose To tag is not ours does not match (§17.2.3)
    wrong = request("ACK", branch=None, to_tag="other", cseq_method="ACK")
    layer.receive(wrong, A, 0.3)
    assert events(layer) == [AckReceived(None, wrong, A)]
    assert layer.state(ev.tx_id) is State.COMPLETED
    layer.receive(request("ACK", branch=None, to_tag="srv", cseq_method="ACK"), A, 0.4)
    assert layer.state(ev.tx_id) is State.CONFIRMED
    assert events(layer) == []
    # non-cookie branches count as RFC 2543 too; different Call-ID -> different tx
    odd = request(branch="1234")
    assert server_key(odd).startswith("s2543|")
    assert server_key(odd) != server_key(request(branch="12345"))


def test_response_matching_and_stray_responses() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    tx = layer.send_request(req, B, 0.0)
    ok = make_response(req, 200)
    wrong_method = make_response(request("OPTIONS", cseq_method="INFO"), 200)
    layer.receive(wrong_method, B, 0.1)
    layer.receive(ok, B, 0.1)
    unknown = make_response(request("OPTIONS", branch="z9hG4bKzzz"), 200)
    layer.receive(unknown, B, 0.2)
    no_via = Response(200, "OK", [("CSeq", "1 OPTIONS"), ("Call-ID", "x")])
    layer.receive(no_via, B, 0.2)
    assert events(layer) == [
        StrayResponse(wrong_method, B),
        ResponseReceived(tx, ok),
        StrayResponse(unknown, B),
        StrayResponse(no_via, B),
    ]


def test_late_2xx_after_completed_is_surfaced_as_stray() -> None:
    layer = TransactionLayer()
    req = request()
    tx = layer.send_request(req, B, 0.0)
    layer.receive(make_response(req, 486, to_tag="a"), B, 0.1)
    events(layer)
    late = make_response(req, 200, to_tag="b")
    layer.receive(late, B, 0.2)
    assert events(layer) == [StrayResponse(late, B)]
    assert layer.state(tx) is State.COMPLETED


def test_response_address_rules() -> None:
    src = Address("UDP", "203.0.113.5", 40000)
    assert response_address(request(), src) == Address("UDP", "203.0.113.5", 5060)
    assert response_address(request(via_params=";rport"), src) == src
    assert response_address(request(sent_by="h.example.com"), src).port == 5060
    maddr = response_address(request(via_params=";maddr=239.1.1.1"), src)
    assert maddr == Address("UDP", "239.1.1.1", 5060)
    tcp = Address("TCP", "203.0.113.5", 40001, flow="f1")
    assert response_address(request(), tcp) == tcp


def test_receive_bytes_and_malformed_input() -> None:
    layer = TransactionLayer()
    layer.receive(bytes(request("OPTIONS")), A, 0.0)
    [ev] = events(layer)
    assert isinstance(ev, RequestReceived)
    assert ev.request.method == "OPTIONS"
    layer.receive(b"\x00\x01garbage", A, 0.0)
    [bad] = events(layer)
    assert isinstance(bad, MalformedMessage)
    assert layer.datagrams_to_send() == []
    broken = bytes(request("OPTIONS", branch="z9hG4bKbroken")).replace(
        b"Max-Forwards: 70", b"Max-Forwards: many"
    )
    layer.receive(broken, A, 0.0)
    [bad] = events(layer)
    assert isinstance(bad, MalformedMessage)
    assert bad.error.partial is not None
    [(data, dest)] = layer.datagrams_to_send()
    answer = parse_message(data)
    assert isinstance(answer, Response)
    assert answer.status == 400
    assert answer.cseq.method == "OPTIONS"
    assert dest == A
    layer.receive(bytes(request("OPTIONS")).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), A, 0.0)
    [bad] = events(layer)
    [(data, _)] = layer.datagrams_to_send()
    answer = parse_message(data)
    assert isinstance(answer, Response)
    assert answer.status == 505


def test_report_unreachable_fails_every_transaction_on_a_flow() -> None:
    layer = TransactionLayer()
    flow = Address("TCP", "192.0.2.2", 5060, flow="conn-7")
    t1 = layer.send_request(request("OPTIONS", branch="z9hG4bK1"), flow, 0.0)
    t2 = layer.send_request(request("INVITE", branch="z9hG4bK2"), flow, 0.0)
    t3 = layer.send_request(request("OPTIONS", branch="z9hG4bK3"), B, 0.0)
    told = layer.report_unreachable(Address("TCP", "0.0.0.0", 0, flow="conn-7"), 0.1)
    assert sorted(told) == sorted([t1, t2])
    assert layer.state(t3) is State.TRYING
    evs = events(layer)
    assert TransportFailure(t1) in evs
    assert TransactionTerminated(t2) in evs


# ------------------------------------------------------------------ fake link


class Link:
    """Delivers datagrams between two layers; ``drop`` decides per datagram."""

    def __init__(self, drop: Callable[[int, bytes], bool]) -> None:
        self.drop = drop
        self.count = 0

    def pump(self, layers: dict[Address, TransactionLayer], now: float) -> None:
        moved = True
        while moved:
            moved = False
            for src, layer in layers.items():
                for data, dest in layer.datagrams_to_send():
                    self.count += 1
                    moved = True
                    if not self.drop(self.count, data):
                        layers[Address(dest.transport, dest.host, dest.port)].receive(
                            data, src, now
                        )


def _uas(layer: TransactionLayer, now: float, status: int) -> list[Event]:
    """A trivial TU: answer every new request with ``status``."""
    seen = []
    while (ev := layer.next_event()) is not None:
        seen.append(ev)
        if isinstance(ev, RequestReceived):
            layer.send_response(ev.tx_id, make_response(ev.request, status, to_tag="uas"), now)
    return seen


def _run_pair(drop_first: int, method: str, status: int) -> tuple[list[Event], list[Event]]:
    uac, uas = TransactionLayer(), TransactionLayer()
    layers = {A: uac, B: uas}
    link = Link(lambda n, _data: n <= drop_first)
    now = 0.0
    uac.send_request(request(method), B, now)
    uac_events: list[Event] = []
    uas_events: list[Event] = []
    for _ in range(1000):
        link.pump(layers, now)
        uas_events.extend(_uas(uas, now, status))
        link.pump(layers, now)
        uac_events.extend(events(uac))
        deadlines = [t for t in (uac.get_timer(), uas.get_timer()) if t is not None]
        if not deadlines:
            break
        now = min(deadlines)
        uac.handle_timer(now)
        uas.handle_timer(now)
    return uac_events, uas_events


def test_lossless_invite_486_completes_both_sides() -> None:
    uac_events, uas_events = _run_pair(0, "INVITE", 486)
    finals = [e.response.status for e in uac_events if isinstance(e, ResponseReceived)]
    assert finals == [486]
    assert sum(isinstance(e, TransactionTerminated) for e in uac_events) == 1
    assert sum(isinstance(e, TransactionTerminated) for e in uas_events) == 1


def test_lossy_link_invite_still_completes() -> None:
    # drop the first 3 datagrams: two INVITE copies and … whatever comes next
    uac_events, uas_events = _run_pair(3, "INVITE", 486)
    finals = [e.response.status for e in uac_events if isinstance(e, ResponseReceived)]
    assert finals == [486]  # retransmitted finals were ACKed but not passed up twice
    assert [type(e) for e in uas_events].count(RequestReceived) == 1
    assert sum(isinstance(e, TransactionTerminated) for e in uac_events) == 1
    assert sum(isinstance(e, TransactionTerminated) for e in uas_events) == 1


def test_lossy_link_non_invite_still_completes() -> None:
    uac_events, uas_events = _run_pair(4, "MESSAGE", 202)
    statuses = [e.response.status for e in uac_events if isinstance(e, ResponseReceived)]
    assert statuses == [202]
    assert [type(e) for e in uas_events].count(RequestReceived) == 1


def test_link_too_lossy_times_out() -> None:
    uac_events, _ = _run_pair(10_000, "OPTIONS", 200)
    assert [type(e).__name__ for e in uac_events] == [
        "TransactionTimeout",
        "TransactionTerminated",
    ]


def test_stop_retransmissions_of_a_branch_given_up_before_any_answer() -> None:
    """tm's fr_timer: a branch that never answered stops being resent (no CANCEL, §9.1)."""
    layer = TransactionLayer()
    tx_id = layer.send_request(request("INVITE"), B, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    layer.handle_timer(0.5)  # timer A: the first retransmission
    assert len(layer.datagrams_to_send()) == 1
    assert layer.stop_retransmissions(tx_id)
    for now in (1.5, 3.5, 7.5, 15.5):
        layer.handle_timer(now)
        assert layer.datagrams_to_send() == []
    # The transaction still matches a late answer until timer B (64*T1) ends it.
    assert layer.state(tx_id) is State.CALLING
    layer.handle_timer(32.0)
    assert layer.state(tx_id) is None
    assert not layer.stop_retransmissions(tx_id)


def test_completed_non_invite_server_keeps_only_the_bytes_of_its_response() -> None:
    """§17.2.2: Completed answers retransmissions with the final response for timer J;
    the parsed response is released (a busy registrar holds thousands of these)."""
    layer = TransactionLayer()
    layer.receive(request("REGISTER"), A, 0.0)
    (received,) = events(layer)
    assert isinstance(received, RequestReceived)
    layer.send_response(received.tx_id, make_response(received.request, 200), 0.0)
    (sent,) = layer.datagrams_to_send()
    assert layer.state(received.tx_id) is State.COMPLETED
    assert layer._servers[received.tx_id].last_response is None
    layer.receive(request("REGISTER"), A, 1.0)  # a retransmission of the request
    assert layer.datagrams_to_send() == [sent]  # the same bytes again
    assert events(layer) == []
