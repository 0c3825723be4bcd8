"""Every path of RFC 3261 Figures 5-8 (with RFC 6026's Accepted state), fake clock.

Each test drives a TransactionLayer with explicit times and checks what was sent
when, which events came out and which state the transaction is in.
"""

from __future__ import annotations

import pytest

from sipmesh.sip.message import Request, Response
from sipmesh.sip.parser import parse_message
from sipmesh.sip.stateless import make_response
from sipmesh.sip.transaction import (
    AckReceived,
    Address,
    Event,
    RequestReceived,
    ResponseReceived,
    State,
    TimerConfig,
    TransactionError,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailure,
)

UDP_PEER = Address("UDP", "192.0.2.10", 5060)
TCP_PEER = Address("TCP", "192.0.2.10", 5060, flow="conn-1")


def request(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bKtest1",
    transport: str = "UDP",
    to_tag: str | None = None,
) -> Request:
    to = "<sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@biloxi.example.com",
        [
            ("Via", f"SIP/2.0/{transport} 192.0.2.10:5060;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
            ("To", to),
            ("Call-ID", "a84b4c76e66710@pc33.atlanta.example.com"),
            ("CSeq", f"314159 {'INVITE' if method == 'ACK' else method}"),
            ("Content-Length", "0"),
        ],
    )


def reply(req: Request, status: int, tag: str = "a6c85cf") -> Response:
    return make_response(req, status, to_tag=tag)


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def run(layer: TransactionLayer, until: float) -> list[tuple[float, bytes]]:
    """Fire timers up to ``until``; return (time, datagram) of everything sent."""
    sent = [(-1.0, d) for d, _ in layer.datagrams_to_send()]
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)
        sent.extend((deadline, d) for d, _ in layer.datagrams_to_send())
    return sent


def times(sent: list[tuple[float, bytes]]) -> list[float]:
    return [t for t, _ in sent]


# ---------------------------------------------------------------- Figure 5: INVITE client


def test_invite_client_timer_a_doubles_without_cap_then_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UDP_PEER, 0.0)
    first = layer.datagrams_to_send()
    assert first == [(bytes(request()), UDP_PEER)]
    assert layer.state(tx) is State.CALLING
    sent = run(layer, 100.0)
    # A = T1, 2T1, 4T1 … (no T2 cap for INVITE); B = 64*T1 = 32 s ends it
    assert times(sent) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert events(layer) == [TransactionTimeout(tx), TransactionTerminated(tx)]
    assert layer.state(tx) is None
    assert layer.get_timer() is None


def test_invite_client_custom_t1() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.1, t2=1.0, t4=1.0))
    tx = layer.send_request(request(), UDP_PEER, 10.0)
    sent = run(layer, 100.0)
    assert times(sent) == pytest.approx([-1.0, 10.1, 10.3, 10.7, 11.5, 13.1, 16.3])
    assert events(layer)[0] == TransactionTimeout(tx)


def test_invite_client_reliable_never_retransmits() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(transport="TCP"), TCP_PEER, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    assert layer.get_timer() == 32.0
    assert run(layer, 100.0) == []
    assert events(layer) == [TransactionTimeout(tx), TransactionTerminated(tx)]


def test_invite_client_proceeding_then_non2xx_completed_then_timer_d() -> None:
    layer = TransactionLayer()
    req = request()
    tx = layer.send_request(req, UDP_PEER, 0.0)
    layer.datagrams_to_send()
    trying = reply(req, 100)
    layer.receive(trying, UDP_PEER, 0.2)
    assert layer.state(tx) is State.PROCEEDING
    ringing = reply(req, 180)
    layer.receive(ringing, UDP_PEER, 1.0)
    assert events(layer) == [ResponseReceived(tx, trying), ResponseReceived(tx, ringing)]
    assert run(layer, 20.0) == []  # no retransmissions and no timer B in Proceeding
    busy = reply(req, 486)
    layer.receive(busy, UDP_PEER, 20.0)
    assert layer.state(tx) is State.COMPLETED
    assert events(layer) == [ResponseReceived(tx, busy)]
    [(ack_bytes, dest)] = layer.datagrams_to_send()
    assert dest == UDP_PEER
    ack = parse_message(ack_bytes)
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert ack.uri == req.uri
    assert ack.cseq.seq == 314159
    assert ack.cseq.method == "ACK"
    assert ack.to.tag == "a6c85cf"
    assert [v.branch for v in ack.vias] == ["z9hG4bKtest1"]
    # a retransmitted final is ACKed again and not passed up; 1xx now ignored
    layer.receive(busy, UDP_PEER, 21.0)
    layer.receive(ringing, UDP_PEER, 21.5)
    assert [d for d, _ in layer.datagrams_to_send()] == [ack_bytes]
    assert events(layer) == []
    # timer D: 32 s after entering Completed
    assert layer.get_timer() == 52.0
    run(layer, 52.0)
    assert events(layer) == [TransactionTerminated(tx)]


def test_invite_client_calling_straight_to_completed_reliable_d_is_zero() -> None:
    layer = TransactionLayer()
    req = request(transport="TCP")
    tx = layer.send_request(req, TCP_PEER, 0.0)
    layer.datagrams_to_send()
    busy = reply(req, 603)
    layer.receive(busy, TCP_PEER, 0.3)
    assert events(layer) == [ResponseReceived(tx, busy), TransactionTerminated(tx)]
    assert len(layer.datagrams_to_send()) == 1  # the ACK
    assert layer.get_timer() is None


@pytest.mark.parametrize("via_proceeding", [False, True])
def test_invite_client_2xx_accepted_passes_retransmissions_until_timer_m(
    via_proceeding: bool,
) -> None:
    layer = TransactionLayer()
    req = request()
    tx = layer.send_request(req, UDP_PEER, 0.0)
    layer.datagrams_to_send()
    if via_proceeding:
        layer.receive(reply(req, 180), UDP_PEER, 0.1)
        events(layer)
    ok = reply(req, 200)
    layer.receive(ok, UDP_PEER, 0.4)
    assert layer.state(tx) is State.ACCEPTED
    assert layer.datagrams_to_send() == []  # the TU ACKs a 2xx, not the transaction
    layer.receive(ok, UDP_PEER, 1.0)
    other_fork = reply(req, 200, tag="fork2")
    layer.receive(other_fork, UDP_PEER, 2.0)
    assert events(layer) == [
        ResponseReceived(tx, ok),
        ResponseReceived(tx, ok),
        ResponseReceived(tx, other_fork),
    ]
    assert run(layer, 100.0) == []  # no timer A retransmissions after the 2xx
    assert events(layer) == [TransactionTerminated(tx)]
    # it ended at timer M = 64*T1 after the first 2xx
    layer2 = TransactionLayer()
    tx2 = layer2.send_request(req, UDP_PEER, 0.0)
    layer2.receive(ok, UDP_PEER, 0.4)
    assert layer2.get_timer() == pytest.approx(32.4)
    layer2.handle_timer(32.39)
    assert layer2.state(tx2) is State.ACCEPTED
    layer2.handle_timer(32.4)
    assert layer2.state(tx2) is None


def test_invite_client_transport_errors() -> None:
    layer = TransactionLayer()
    req = request()
    tx = layer.send_request(req, UDP_PEER, 0.0)
    assert layer.report_transport_error(tx, 0.0)
    assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]
    tx = layer.send_request(req, UDP_PEER, 1.0)
    layer.receive(reply(req, 404), UDP_PEER, 1.1)
    events(layer)
    assert layer.report_transport_error(tx, 1.2)  # the ACK could not be sent
    assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]
    assert not layer.report_transport_error(tx, 1.3)


# ------------------------------------------------------------ Figure 6: non-INVITE client


def test_non_invite_client_timer_e_caps_at_t2_then_timer_f() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("OPTIONS"), UDP_PEER, 0.0)
    sent = run(layer, 100.0)
    assert times(sent) == [-1.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(layer) == [TransactionTimeout(tx), TransactionTerminated(tx)]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    tx = layer.send_request(req, UDP_PEER, 0.0)
    layer.datagrams_to_send()
    run(layer, 0.5)  # first retransmission at 0.5, E now 1.0 -> next at 1.5
    trying = reply(req, 100)
    layer.receive(trying, UDP_PEER, 0.7)
    assert layer.state(tx) is State.PROCEEDING
    sent = run(layer, 13.0)
    # pending E (1.5) fires, then it is reset to T2 each time
    assert times(sent) == [1.5, 5.5, 9.5]
    ok = reply(req, 200)
    layer.receive(ok, UDP_PEER, 13.0)
    assert events(layer) == [ResponseReceived(tx, trying), ResponseReceived(tx, ok)]
    assert layer.state(tx) is State.COMPLETED
    # Completed absorbs retransmitted responses; K = T4 = 5 s
    layer.receive(ok, UDP_PEER, 14.0)
    layer.receive(trying, UDP_PEER, 14.0)
    assert events(layer) == []
    assert run(layer, 100.0) == []
    assert layer.state(tx) is None
    assert events(layer) == [TransactionTerminated(tx)]


def test_non_invite_client_timer_k_value_and_reliable_zero() -> None:
    layer = TransactionLayer(TimerConfig(t4=2.5))
    req = request("BYE")
    tx = layer.send_request(req, UDP_PEER, 0.0)
    layer.receive(reply(req, 481), UDP_PEER, 0.2)
    assert layer.get_timer() == pytest.approx(2.7)
    run(layer, 2.7)
    assert layer.state(tx) is None
    reliable = TransactionLayer()
    tx = reliable.send_request(request("BYE", transport="TCP"), TCP_PEER, 0.0)
    assert reliable.get_timer() == 32.0  # only F
    reliable.receive(reply(req, 200), TCP_PEER, 0.2)
    assert [type(e) for e in events(reliable)] == [ResponseReceived, TransactionTerminated]


def test_non_invite_client_timeout_in_proceeding_and_transport_errors() -> None:
    layer = TransactionLayer()
    req = request("MESSAGE")
    tx = layer.send_request(req, UDP_PEER, 0.0)
    layer.receive(reply(req, 100), UDP_PEER, 0.1)
    run(layer, 40.0)
    assert [type(e) for e in events(layer)] == [
        ResponseReceived,
        TransactionTimeout,
        TransactionTerminated,
    ]
    for with_1xx in (False, True):
        tx = layer.send_request(req, UDP_PEER, 50.0)
        if with_1xx:
            layer.receive(reply(req, 100), UDP_PEER, 50.1)
            assert layer.state(tx) is State.PROCEEDING
        events(layer)
        layer.report_transport_error(tx, 50.2)
        assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]


# ----------------------------------------------------------- Figure 7: INVITE server


def _server(layer: TransactionLayer, req: Request, now: float = 0.0) -> str:
    layer.receive(req, UDP_PEER if req.top_via.transport == "UDP" else TCP_PEER, now)  # type: ignore[union-attr]
    ev = layer.next_event()
    assert isinstance(ev, RequestReceived)
    assert ev.request is req
    return ev.tx_id


def test_invite_server_auto_trying_and_retransmissions_in_proceeding() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    assert layer.state(tx) is State.PROCEEDING
    assert layer.get_timer() == pytest.approx(0.2)
    sent = run(layer, 0.2)
    assert len(sent) == 1
    trying = parse_message(sent[0][1])
    assert isinstance(trying, Response)
    assert trying.status == 100
    assert trying.to.tag is None
    layer.receive(request(), UDP_PEER, 0.6)  # retransmission gets the 100 again
    assert [d for d, _ in layer.datagrams_to_send()] == [sent[0][1]]
    ringing = reply(req, 180)
    layer.send_response(tx, ringing, 1.0)
    layer.receive(request(), UDP_PEER, 1.5)
    assert [d for d, _ in layer.datagrams_to_send()] == [bytes(ringing), bytes(ringing)]
    assert events(layer) == []  # retransmissions never reach the TU


def test_invite_server_tu_answers_before_200ms_no_auto_trying() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    layer.send_response(tx, reply(req, 180), 0.05)
    layer.datagrams_to_send()
    assert run(layer, 0.3) == []
    assert TransactionLayer(TimerConfig(trying_delay=None)).get_timer() is None


def test_invite_server_completed_timer_g_then_timer_h() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    busy = reply(req, 486)
    layer.send_response(tx, busy, 0.1)
    assert layer.state(tx) is State.COMPLETED
    sent = run(layer, 100.0)
    assert times(sent) == pytest.approx(
        [-1.0, 0.6, 1.6, 3.6, 7.6, 11.6, 15.6, 19.6, 23.6, 27.6, 31.6]
    )
    assert all(d == bytes(busy) for _, d in sent)
    # H = 64*T1 after the final: the ACK never came
    assert events(layer) == [TransactionTimeout(tx), TransactionTerminated(tx)]


def test_invite_server_ack_confirms_absorbs_then_timer_i() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    busy = reply(req, 486)
    layer.send_response(tx, busy, 0.0)
    layer.datagrams_to_send()
    layer.receive(request(), UDP_PEER, 0.3)  # INVITE retransmission in Completed
    assert [d for d, _ in layer.datagrams_to_send()] == [bytes(busy)]
    ack = request("ACK", to_tag="a6c85cf")
    layer.receive(ack, UDP_PEER, 0.4)
    assert layer.state(tx) is State.CONFIRMED
    layer.receive(ack, UDP_PEER, 0.9)  # absorbed
    layer.receive(request(), UDP_PEER, 1.0)  # absorbed too
    assert layer.datagrams_to_send() == []
    assert events(layer) == []
    assert layer.get_timer() == pytest.approx(5.4)  # I = T4, no more G
    with pytest.raises(TransactionError):
        layer.send_response(tx, reply(req, 500), 1.0)
    run(layer, 5.4)
    assert events(layer) == [TransactionTerminated(tx)]


def test_invite_server_reliable_no_g_and_i_zero() -> None:
    layer = TransactionLayer()
    req = request(transport="TCP")
    tx = _server(layer, req)
    layer.send_response(tx, reply(req, 404), 0.0)
    assert layer.get_timer() == 32.0  # H only
    layer.receive(request("ACK", transport="TCP", to_tag="a6c85cf"), TCP_PEER, 0.1)
    assert events(layer) == [TransactionTerminated(tx)]


def test_invite_server_accepted_state() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    ok = reply(req, 200)
    layer.send_response(tx, ok, 0.1)
    assert layer.state(tx) is State.ACCEPTED
    layer.datagrams_to_send()
    layer.receive(request(), UDP_PEER, 0.5)  # INVITE retransmission: absorbed
    assert layer.datagrams_to_send() == []
    layer.send_response(tx, ok, 0.6)  # the TU's own 2xx retransmission goes out
    assert [d for d, _ in layer.datagrams_to_send()] == [bytes(ok)]
    ack = request("ACK", to_tag="a6c85cf")  # same branch: matches, goes to the TU
    layer.receive(ack, UDP_PEER, 0.7)
    assert events(layer) == [AckReceived(tx, ack, UDP_PEER)]
    with pytest.raises(TransactionError):
        layer.send_response(tx, reply(req, 486), 0.8)
    assert layer.report_transport_error(tx, 0.9)
    assert events(layer) == [TransportFailure(tx)]
    assert layer.state(tx) is State.ACCEPTED
    assert layer.get_timer() == pytest.approx(32.1)  # timer L
    run(layer, 32.1)
    assert events(layer) == [TransactionTerminated(tx)]


def test_invite_server_transport_errors() -> None:
    layer = TransactionLayer()
    req = request()
    tx = _server(layer, req)
    layer.report_transport_error(tx, 0.1)
    assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]
    tx = _server(layer, req, 1.0)
    layer.send_response(tx, reply(req, 480), 1.1)
    layer.report_transport_error(tx, 1.2)
    assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]


# -------------------------------------------------------- Figure 8: non-INVITE server


def test_non_invite_server_all_states() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    tx = _server(layer, req)
    assert layer.state(tx) is State.TRYING
    assert layer.get_timer() is None  # no 100 Trying timer for non-INVITE
    layer.receive(request("REGISTER"), UDP_PEER, 0.5)  # Trying absorbs
    assert layer.datagrams_to_send() == []
    trying = reply(req, 100)
    layer.send_response(tx, trying, 0.6)
    assert layer.state(tx) is State.PROCEEDING
    layer.receive(request("REGISTER"), UDP_PEER, 1.0)
    ok = reply(req, 200)
    layer.send_response(tx, ok, 1.1)
    assert layer.state(tx) is State.COMPLETED
    layer.receive(request("REGISTER"), UDP_PEER, 2.0)
    assert [d for d, _ in layer.datagrams_to_send()] == [
        bytes(trying),
        bytes(trying),
        bytes(ok),
        bytes(ok),
    ]
    with pytest.raises(TransactionError):
        layer.send_response(tx, ok, 2.0)
    assert layer.get_timer() == pytest.approx(33.1)  # J = 64*T1
    run(layer, 33.1)
    assert events(layer) == [TransactionTerminated(tx)]


def test_non_invite_server_trying_to_completed_reliable_j_zero() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport="TCP")
    tx = _server(layer, req)
    layer.send_response(tx, reply(req, 200), 0.0)
    assert events(layer) == [TransactionTerminated(tx)]


@pytest.mark.parametrize("responses", [(), (100,), (100, 200)])
def test_non_invite_server_transport_errors(responses: tuple[int, ...]) -> None:
    layer = TransactionLayer()
    req = request("SUBSCRIBE")
    tx = _server(layer, req)
    for status in responses:
        layer.send_response(tx, reply(req, status), 0.1)
    layer.report_transport_error(tx, 0.2)
    assert events(layer) == [TransportFailure(tx), TransactionTerminated(tx)]


def test_send_response_unknown_transaction() -> None:
    with pytest.raises(TransactionError):
        TransactionLayer().send_response("s|nope", reply(request(), 200), 0.0)
    with pytest.raises(TransactionError):
        TransactionLayer().send_request(request("ACK"), UDP_PEER, 0.0)
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), UDP_PEER, 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request("OPTIONS"), UDP_PEER, 0.0)


def test_timer_config_validation() -> None:
    with pytest.raises(ValueError, match="T1"):
        TimerConfig(t1=5.0, t2=4.0)
    with pytest.raises(ValueError, match="T4"):
        TimerConfig(t4=0)
    cfg = TimerConfig(t1=0.25)
    assert (cfg.timer_b, cfg.timer_f, cfg.timer_h, cfg.timer_j) == (16.0, 16.0, 16.0, 16.0)
    assert (cfg.timer_l, cfg.timer_m, cfg.timer_i, cfg.timer_k) == (16.0, 16.0, 5.0, 5.0)
