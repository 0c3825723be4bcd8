"""Proxy helpers of RFC 3261 §16: branches, Via, Max-Forwards, routing, Record-Route."""

from __future__ import annotations

from sipmesh.sip.message import Request
from sipmesh.sip.parser import parse_message
from sipmesh.sip.proxy import (
    MAGIC_COOKIE,
    Interface,
    add_record_route,
    add_via,
    decrement_max_forwards,
    make_branch,
    make_cancel,
    max_forwards_exhausted,
    next_hop,
    preprocess_routes,
    remove_top_via,
    strict_route_fixup,
)
from sipmesh.sip.stateless import make_response
from sipmesh.sip.uri import AbsoluteURI, SipURI, TelURI

LOCAL_HOSTS = {"proxy.example.com", "192.0.2.1", "10.0.0.1"}


def is_local(uri: SipURI | TelURI | AbsoluteURI) -> bool:
    return isinstance(uri, SipURI) and uri.host in LOCAL_HOSTS


def request(uri: str = "sip:bob@biloxi.example.com", routes: tuple[str, ...] = ()) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds"),
        ("Max-Forwards", "70"),
        *(("Route", r) for r in routes),
        ("To", "Bob <sip:bob@biloxi.example.com>"),
        ("From", "Alice <sip:alice@atlanta.example.com>;tag=1928301774"),
        ("Call-ID", "a84b4c76e66710"),
        ("CSeq", "314159 INVITE"),
        ("Content-Length", "0"),
    ]
    return Request("INVITE", uri, headers)


def test_branch_is_cookie_prefixed_unique_per_fork_and_stable_for_cancel() -> None:
    inv = request()
    b0 = make_branch(inv, 0)
    b1 = make_branch(inv, 1)
    assert b0.startswith(MAGIC_COOKIE)
    assert b0 != b1
    assert make_branch(request(), 0) == b0  # retransmission: same branch
    cancel = make_cancel(inv)
    assert make_branch(cancel, 0) == b0
    assert make_branch(cancel, 1) == b1
    assert make_branch(inv, 0, salt="edge-2") != b0
    other = request()
    other.set("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKdifferent")
    assert make_branch(other, 0) != b0


def test_add_and_remove_via() -> None:
    req = request()
    via = add_via(req, "UDP", "192.0.2.1", 5060, "z9hG4bKabc")
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport"
    assert req.get_all("Via")[0] == str(via)
    assert len(req.vias) == 2
    add_via(req, "TCP", "2001:db8::1", None, "z9hG4bKv6", rport=False)
    assert req.get_all("Via")[0] == "SIP/2.0/TCP [2001:db8::1];branch=z9hG4bKv6"
    resp = make_response(req, 200)
    popped = remove_top_via(resp)
    assert popped is not None
    assert popped.branch == "z9hG4bKv6"
    assert [v.branch for v in resp.vias] == ["z9hG4bKabc", "z9hG4bK776asdhds"]


def test_max_forwards() -> None:
    req = request()
    assert not max_forwards_exhausted(req)
    assert decrement_max_forwards(req) == 69
    assert req.max_forwards == 69
    req.set("Max-Forwards", "0")
    assert max_forwards_exhausted(req)
    req.remove("Max-Forwards")
    assert not max_forwards_exhausted(req)
    assert decrement_max_forwards(req) == 70
    assert req.get("Max-Forwards") == "70"


def test_loose_route_removes_our_route() -> None:
    req = request(routes=("<sip:proxy.example.com;lr>", "<sip:p2.example.net;lr>"))
    result = preprocess_routes(req, is_local)
    assert not result.strict_router_fixed
    assert [str(r.uri) for r in result.removed] == ["sip:proxy.example.com;lr"]
    assert req.get_all("Route") == ["<sip:p2.example.net;lr>"]
    assert req.uri == "sip:bob@biloxi.example.com"
    assert str(next_hop(req)) == "sip:p2.example.net;lr"


def test_loose_route_removes_double_record_route_pair() -> None:
    req = request(
        routes=(
            "<sip:192.0.2.1;transport=udp;lr>, <sip:10.0.0.1;transport=tcp;lr>",
            "<sip:p2.example.net;lr>",
        )
    )
    result = preprocess_routes(req, is_local)
    assert len(result.removed) == 2
    assert req.get_all("Route") == ["<sip:p2.example.net;lr>"]


def test_route_not_ours_is_left_alone() -> None:
    req = request(routes=("<sip:p2.example.net;lr>",))
    result = preprocess_routes(req, is_local)
    assert result.removed == ()
    assert req.get_all("Route") == ["<sip:p2.example.net;lr>"]
    assert str(next_hop(request())) == "sip:bob@biloxi.example.com"


def test_strict_router_upstream_restores_request_uri() -> None:
    # The previous hop was a strict router: it put our Record-Route URI in the R-URI
    # and the remote target at the end of Route (§16.4).
    req = request(
        uri="sip:proxy.example.com;lr",
        routes=("<sip:p2.example.net;lr>", "<sip:bob@192.0.2.99:5062>"),
    )
    result = preprocess_routes(req, is_local)
    assert result.strict_router_fixed
    assert req.uri == "sip:bob@192.0.2.99:5062"
    assert req.get_all("Route") == ["<sip:p2.example.net;lr>"]


def test_request_for_our_domain_is_not_taken_for_strict_routing() -> None:
    req = request(uri="sip:proxy.example.com", routes=("<sip:proxy.example.com;lr>",))
    result = preprocess_routes(req, is_local)
    assert not result.strict_router_fixed
    assert req.uri == "sip:proxy.example.com"
    assert req.get_all("Route") == []
    # an operator can say which R-URIs are its own Record-Route values
    req2 = request(uri="sip:10.0.0.1", routes=("<sip:bob@192.0.2.99>",))
    res2 = preprocess_routes(
        req2, is_local, is_own_record_route=lambda u: isinstance(u, SipURI) and u.host == "10.0.0.1"
    )
    assert res2.strict_router_fixed
    assert req2.uri == "sip:bob@192.0.2.99"


def test_strict_router_downstream_fixup() -> None:
    req = request(routes=("<sip:strict.example.net>", "<sip:p3.example.net;lr>"))
    assert strict_route_fixup(req)
    assert req.uri == "sip:strict.example.net"
    assert req.get_all("Route") == ["<sip:p3.example.net;lr>", "<sip:bob@biloxi.example.com>"]
    loose = request(routes=("<sip:p3.example.net;lr>",))
    assert not strict_route_fixup(loose)
    assert loose.uri == "sip:bob@biloxi.example.com"
    assert not strict_route_fixup(request())


def test_record_route_single_and_double() -> None:
    req = request()
    values = add_record_route(req, Interface("UDP", "192.0.2.1", 5060))
    assert values == ["<sip:192.0.2.1:5060;lr>"]
    assert req.get_all("Record-Route") == values

    tcp = request()
    add_record_route(tcp, Interface("TCP", "192.0.2.1", 5060), params={"ftag": "1928301774"})
    assert tcp.get_all("Record-Route") == ["<sip:192.0.2.1:5060;transport=tcp;lr;ftag=1928301774>"]

    bridged = request()
    bridged.add("Record-Route", "<sip:upstream.example.org;lr>")
    values = add_record_route(
        bridged, Interface("UDP", "192.0.2.1", 5060), Interface("TLS", "2001:db8::1", 5061)
    )
    assert values == [
        "<sip:[2001:db8::1]:5061;transport=tls;lr>",
        "<sip:192.0.2.1:5060;transport=udp;lr>",
    ]
    assert bridged.get_all("Record-Route") == [*values, "<sip:upstream.example.org;lr>"]
    # the values parse back and our preprocessing removes both on the way back
    reparsed = parse_message(bytes(bridged))
    assert isinstance(reparsed, Request)
    assert [str(r.uri) for r in reparsed.record_routes][:2] == [v[1:-1] for v in values]
    back = request(routes=tuple(bridged.get_all("Record-Route")))
    res = preprocess_routes(
        back, lambda u: isinstance(u, SipURI) and u.host in {"192.0.2.1", "[2001:db8::1]"}
    )
    assert len(res.removed) == 2
    assert back.get_all("Route") == ["<sip:upstream.example.org;lr>"]
