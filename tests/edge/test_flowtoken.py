"""RFC 5626 flow tokens (services/edge/flowtoken.py): made and checked by every edge
of an installation, carried in Record-Route and Path, and followed by in-dialog
requests that enter at an edge other than the one owning the flow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sipmesh.edge.branches import ProxyTransaction
from sipmesh.edge.flowtoken import (
    CALLEE_PARAM,
    CALLER_PARAM,
    FlowTokens,
    load_key,
    path_value,
    rr_flow_params,
    rr_flows,
)
from sipmesh.edge.forward import Hop
from sipmesh.edge.service import EdgeService
from sipmesh.edge.transport.base import udp_flow_id
from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.sip import NameAddr, Request, SipURI, parse_message
from sipmesh.sip.transaction import Address
from sipmesh.state.kv_memory import MemoryKV

from .conftest import FakeRouter, Peer, request_text, start_edge, udp_port

PeerFactory = Callable[..., Awaitable[Peer]]
KEY = b"k" * 32


def test_token_round_trip_and_tampering() -> None:
    tokens = FlowTokens(KEY)
    flow = "udp|udp:0.0.0.0:5060|203.0.113.9|40312"
    token = tokens.encode("edge-1", flow)
    assert tokens.decode(token) == ("edge-1", flow)
    # URI-safe: it can be a user part and a parameter value unescaped.
    uri = SipURI.parse(f"sip:{token}@192.0.2.1;lr;{CALLEE_PARAM}={token}")
    assert (uri.user, uri.params[CALLEE_PARAM]) == (token, token)
    body, _, mac = token.partition(".")
    forged = FlowTokens(b"x" * 32).encode("edge-1", flow)
    assert tokens.decode(forged) is None  # another installation's key
    assert tokens.decode(body + "." + mac[::-1]) is None
    assert tokens.decode(FlowTokens(KEY).encode("edge-2", flow).split(".")[0] + "." + mac) is None
    assert tokens.decode("garbage") is None
    assert tokens.decode("") is None


def test_resolve_turns_a_token_into_the_handover_fields() -> None:
    tokens = FlowTokens(KEY)
    target = router_pb2.Target(uri="sip:bob@192.0.2.5", flow_token=tokens.encode("e2", "c-17"))
    resolved = tokens.resolve(target)
    assert resolved is not None
    assert (resolved.edge_id, resolved.flow_id, resolved.flow_token) == ("e2", "c-17", "")
    bad = tokens.resolve(router_pb2.Target(uri="sip:bob@192.0.2.5", flow_token="a.b"))
    assert bad is not None
    assert (bad.edge_id, bad.flow_id) == ("", "")  # not followed: routed by R-URI


def _ptx(transport: str, flow: str, nat: bool, from_tag: str = "ft1") -> ProxyTransaction:
    request = parse_message(
        request_text("INVITE", "sip:bob@sipmesh.test", 5070)
        .replace("tag=a1", f"tag={from_tag}")
        .replace("\n", "\r\n")
        .encode()
    )
    assert isinstance(request, Request)
    return ProxyTransaction(
        tx_id="t",
        request=request,
        source=Address(transport, "203.0.113.9", 5070, flow),
        source_pb=common_pb2.Source(nat_detected=nat),
        started_at=0.0,
    )


def test_record_route_parameters_name_the_flows_of_both_sides() -> None:
    tokens = FlowTokens(KEY)
    to_flow = Hop("tcp", "192.0.2.5", 5060, "c-9", "edge-b")
    # A caller on a TCP connection, a callee on another edge's flow.
    params = rr_flows(tokens, _ptx("TCP", "c-1", False), to_flow, "edge-a")
    uri = SipURI.parse("sip:192.0.2.1;lr" + params)
    assert uri.params["ftag"] == "ft1"
    assert tokens.decode(uri.params[CALLER_PARAM] or "") == ("edge-a", "c-1")
    assert tokens.decode(uri.params[CALLEE_PARAM] or "") == ("edge-b", "c-9")
    # A NATed UDP caller's binding is a flow too; a plain UDP one is not.
    udp = "udp|udp:0.0.0.0:5060|203.0.113.9|5070"
    nated = SipURI.parse("sip:x;lr" + rr_flows(tokens, _ptx("UDP", udp, True), Hop("udp", "h", 1),
                                                "edge-a"))  # fmt: skip
    assert tokens.decode(nated.params[CALLER_PARAM] or "") == ("edge-a", udp)
    assert rr_flows(tokens, _ptx("UDP", udp, False), Hop("udp", "h", 1), "edge-a") == ""
    # No direction without a usable From tag: no tokens at all.
    assert rr_flow_params(tokens, None, ("e", "f"), None) == ""
    assert rr_flow_params(tokens, "a%20b", ("e", "f"), None) == ""


def test_path_value() -> None:
    assert (
        path_value("T.k", "udp", "192.0.2.1", 5060, outbound=False) == "<sip:T.k@192.0.2.1:5060;lr>"
    )
    assert (
        path_value("T.k", "tcp", "2001:db8::1", 5060, outbound=True)
        == "<sip:T.k@[2001:db8::1]:5060;transport=tcp;lr;ob>"
    )


async def test_every_edge_of_an_installation_gets_the_same_key() -> None:
    kv = MemoryKV()
    first, second = await load_key(kv), await load_key(kv)
    assert first == second
    assert len(first) >= 16
    assert await load_key(MemoryKV()) != first  # another installation


def _route_flow(request: Request) -> str:
    """What the router's loose_route does with our popped Route (services/router/api.py)."""
    route = NameAddr.parse(request.get("Route") or "").uri
    assert isinstance(route, SipURI)
    to_callee = route.params.get("ftag") == request.from_.tag
    return route.params.get(CALLEE_PARAM if to_callee else CALLER_PARAM) or ""


@pytest.mark.parametrize("router_pops", [True, False])
async def test_in_dialog_requests_entering_another_edge_reach_the_owning_edge(
    udp_peers: PeerFactory, router_pops: bool
) -> None:
    """The callee's (NATed) UDP binding belongs to edge B; the call enters at edge A,
    which hands the INVITE over and Record-Routes with B's flow token. The ACK and
    BYE enter at edge A too and are handed to B, which sends them from its own
    socket — the only address a NAT in front of the callee lets through.

    ``router_pops``: the router's loose_route found the token (one process); else
    the router did not know the Route as its own (split mode, its ``myself`` lacks
    the edge's port) and the edge takes the token from the Route it strips."""
    caller, callee = await udp_peers(), await udp_peers()
    edges: dict[str, EdgeService] = {}

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        msg = parse_message(req.message.raw)
        assert isinstance(msg, Request)
        if msg.to.tag is None:
            owner = edges["b"]
            listener = next(i for i in owner.transports.listeners() if i.transport == "udp")
            target = router_pb2.Target(
                uri=f"sip:bob@127.0.0.1:{callee.port}",
                edge_id=owner.edge_id,
                flow_id=udp_flow_id("udp", listener.name, "127.0.0.1", callee.port),
            )
            relay = router_pb2.Relay(targets=[target], record_route=True)
            return router_pb2.Decision(relay=relay)
        token = _route_flow(msg) if router_pops else ""
        target = router_pb2.Target(uri=msg.uri, flow_token=token)
        stateless = msg.method == "ACK"
        return router_pb2.Decision(relay=router_pb2.Relay(targets=[target], stateless=stateless))

    kv: Any = MemoryKV()  # the shared store: the token key of the installation
    router = FakeRouter(decide)
    edge_b = await start_edge(router, kv=kv)
    edges["b"] = edge_b

    async def peers() -> EdgeService:
        return edge_b

    edge_a = await start_edge(router, kv=kv, peers=peers)
    a, b = udp_port(edge_a), udp_port(edge_b)
    try:
        caller.send(request_text("INVITE", "sip:bob@sipmesh.test", caller.port), a)
        assert (await caller.next_response()).status == 100
        invite = await callee.next_request()
        assert invite.vias[0].port == b
        record_route = invite.get("Record-Route") or ""
        assert "ftag=a1" in record_route
        callee.send(callee.reply(invite, 200, "OK"), b)
        ok = await caller.next_response()
        assert ok.status == 200
        # The caller's route set: the Record-Route the callee saw (one entry, UDP on
        # both sides; the test peer's 200 does not copy it).
        in_dialog = f"Route: {record_route}\n"
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            text = request_text(
                method, f"sip:bob@127.0.0.1:{callee.port}", caller.port, cseq=cseq, extra=in_dialog
            ).replace("To: <sip:bob@sipmesh.test>", "To: <sip:bob@sipmesh.test>;tag=uas1")
            caller.send(text, a)
            got = await callee.next_request()
            assert got.method == method
            # Sent by edge B (its Via on top, from its socket), handed over by A.
            assert got.vias[0].port == b, got
            assert got.vias[1].port == a
            assert got.get("Route") is None
        bye = got
        callee.send(callee.reply(bye, 200, "OK"), b)
        done = await caller.next_response()
        assert (done.status, done.cseq.method) == (200, "BYE")
    finally:
        await edge_a.stop(0)
        await edge_b.stop(0)


async def test_register_carries_the_flow_token_and_a_path_when_the_ua_supports_it(
    udp_peers: PeerFactory,
) -> None:
    """Kamailio's add_path_received / outbound: the REGISTER reaches the registrar
    with Source.flow_token and, for a UA that supports path or outbound, our Path
    with the token (and ``ob`` for outbound, RFC 5626 §5.1) as its first value."""
    ua = await udp_peers()

    async def decide(req: router_pb2.RouteRequest) -> router_pb2.Decision:
        return router_pb2.Decision(reply=router_pb2.Reply(code=200, reason="OK"))

    router = FakeRouter(decide)
    edge = await start_edge(router)
    port = udp_port(edge)
    try:
        cases = ("", "Supported: path\n", "Supported: path, outbound\n")
        for cseq, extra in enumerate(cases, start=1):
            ua.send(request_text("REGISTER", "sip:sipmesh.test", ua.port, cseq=cseq,
                                 extra=extra), port)  # fmt: skip
            assert (await ua.next_response()).status == 200
        assert edge.flow_tokens is not None
        seen = []
        for call in router.calls:
            source = call.message.source
            assert edge.flow_tokens.decode(source.flow_token) == (edge.edge_id, source.flow_id)
            msg = parse_message(call.message.raw)
            assert isinstance(msg, Request)
            seen.append(msg.get_all("Path"))
        token = router.calls[0].message.source.flow_token
        assert seen == [
            [],
            [f"<sip:{token}@127.0.0.1:{port};lr>"],
            [f"<sip:{token}@127.0.0.1:{port};lr;ob>"],
        ]
    finally:
        await edge.stop(0)
