"""ctx's read-only facts: Kamailio's pseudo-variables of the message and its arrival."""

from __future__ import annotations

from sipmesh.gen.sipmesh.v1 import common_pb2, router_pb2
from sipmesh.router.api import Ctx
from sipmesh.router.cfgstore import CfgStore, router_cfg_vars
from sipmesh.router.env import RouterEnv
from sipmesh.router.targets import Myself
from sipmesh.router.txstate import TxState
from sipmesh.runtime.sections.router import RouterConfig
from sipmesh.sip import Request, parse_message
from sipmesh.state.kv_memory import MemoryKV

INVITE = (
    b"INVITE sip:bob@example.com:5080;transport=tcp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKf1\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@atlanta.example>;tag=a1\r\n'
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: facts-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"X-Trace: one\r\n"
    b"X-Trace: two\r\n"
    b"Content-Length: 4\r\n\r\nv=0\n"
)


def make_ctx(**route: object) -> Ctx:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    source = common_pb2.Source(
        remote=common_pb2.Address(
            transport=common_pb2.TRANSPORT_TCP, host="203.0.113.9", port=40000
        ),
        local=common_pb2.Address(
            transport=common_pb2.TRANSPORT_TCP, host="198.51.100.1", port=5060
        ),
        edge_id="edge-a",
        nat_detected=True,
        nat_tests=0x02,
    )
    request = router_pb2.RouteRequest(
        message=common_pb2.SipMessage(raw=INVITE, source=source), **route
    )
    env = RouterEnv(
        settings=RouterConfig(),
        cfg=CfgStore(MemoryKV(), router_cfg_vars({})),
        myself=Myself(["example.com"], [5060]),
    )
    return Ctx(env, request, msg, TxState(auth_user="alice@atlanta.example"))


def test_request_facts() -> None:
    ctx = make_ctx()
    assert ctx.method == "INVITE"
    assert ctx.is_method("register|invite")
    assert (ctx.ruser, ctx.rhost, ctx.rport) == ("bob", "example.com", 5080)
    assert (ctx.from_user, ctx.from_domain, ctx.from_tag) == ("alice", "atlanta.example", "a1")
    assert ctx.from_uri == "sip:alice@atlanta.example"
    assert (ctx.to_user, ctx.to_domain, ctx.to_tag) == ("bob", "example.com", None)
    assert not ctx.has_totag()
    assert ctx.call_id == "facts-1"
    assert ctx.hdr("x-trace") == "one"
    assert ctx.hdrs("X-Trace") == ["one", "two"]
    assert ctx.has_hdr("Max-Forwards")
    assert not ctx.has_hdr("Subject")
    assert ctx.body == b"v=0\n"
    # $ru follows the script's edits; the message itself does not change.
    ctx.set_ruser("carol")
    assert ctx.ruser == "carol"
    assert ctx.msg.uri.startswith("sip:bob@")


def test_arrival_facts() -> None:
    ctx = make_ctx()
    assert (ctx.src_ip, ctx.src_port, ctx.proto) == ("203.0.113.9", 40000, "tcp")
    assert (ctx.local_ip, ctx.local_port, ctx.edge_id) == ("198.51.100.1", 5060, "edge-a")
    assert ctx.nat
    assert ctx.nat_test(0x13)
    assert not ctx.nat_test(0x01)
    assert ctx.auth_user == "alice@atlanta.example"


def test_reply_and_failure_facts() -> None:
    reply = make_ctx(kind=router_pb2.ROUTE_KIND_REPLY, reply_status=486, branch_index=1)
    assert reply.status == 486
    assert reply.t_check_status("4[0-9][0-9]")
    assert reply.branch_index == 1
    assert not reply.t_is_canceled()
    timeout = make_ctx(
        kind=router_pb2.ROUTE_KIND_FAILURE, failure_reason=router_pb2.FAILURE_REASON_TIMEOUT
    )
    assert timeout.status == 408
    cancelled = make_ctx(kind=router_pb2.ROUTE_KIND_FAILURE, reply_status=487)
    assert cancelled.t_is_canceled()
    assert make_ctx().status == 0
    assert make_ctx().branch is None
